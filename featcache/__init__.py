"""featcache: run a frozen ImageNet backbone once, cache its features, train heads in seconds.

The public API is imported lazily, so `import featcache` (and `featcache --help`) stays fast and
TensorFlow loads only when a backbone or a Keras head is actually needed.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.2.0"

_LAZY = {
    "extract": "featcache.extraction",
    "ExtractOptions": "featcache.extraction",
    "open_store": "featcache.stores",
    "fit_head": "featcache.train.fit",
    "sweep": "featcache.train.sweep",
    "compare": "featcache.train.compare",
    "fine_tune": "featcache.finetune",
    "load_run": "featcache.train.run",
    "make_head": "featcache.heads",
    "load_classifier": "featcache.serve.predict",
    "export": "featcache.serve.export",
    "classify": "featcache.serve.classify",
    "register_backbone": "featcache.backbones",
    "BackboneSpec": "featcache.backbones",
    "Preprocess": "featcache.backbones",
    "AugmentParams": "featcache.ingest.augment",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featcache' has no attribute {name!r}")
