"""Registry of backbones. Built in: EfficientNet-Lite0/1/2 (packaged weights), keras.applications, and
keras-hub's DINOv2/DINOv3/SigLIP/SigLIP 2/CLIP image towers (``keras_hub.py``).

Add your own from a package, through the ``featcache.backbones`` entry-point group, so every
featcache process (the CLI, predict, export, workers) finds it::

    # my_pkg/backbones.py
    from featcache.backbones import BackboneSpec, Preprocess
    MY_NET = BackboneSpec(
        name="my_net", input_size=160, feature_dim=256,
        preprocess=Preprocess("my_net", scale=(1 / 64,) * 3, offset=(-2.0,) * 3),
        build_features=build_my_net,  # (input_size, weights) -> Keras model, 4-D feature map out
        weights_source="my lab's checkpoint")

    # pyproject.toml
    [project.entry-points."featcache.backbones"]
    my_net = "my_pkg.backbones:MY_NET"

``register_backbone(spec)`` registers one in the current process only.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import FeatcacheError
from ..registry import Registry, import_object
from .spec import POOLINGS, PREPROCESS, BackboneConfig, BackboneSpec, Preprocess, file_digest


class _BackboneRegistry(Registry[BackboneSpec]):
    def on_plugin(self, item: BackboneSpec, reference: str) -> BackboneSpec:
        return item if item.reference else replace(item, reference=reference)


BACKBONES = _BackboneRegistry("backbone", "featcache.backbones", lambda o: isinstance(o, BackboneSpec))


def register_backbone(spec: BackboneSpec, *, replace: bool = False) -> BackboneSpec:
    return BACKBONES.register(spec, replace=replace)


def get_backbone(name: str) -> BackboneSpec:
    return BACKBONES.get(name)


def list_backbones() -> list[BackboneSpec]:
    return list(BACKBONES)


def spec_for(config: BackboneConfig) -> BackboneSpec:
    """The spec that builds ``config``: registered here, or imported from the config's builder
    reference (a process that never registered the plugin still rebuilds the same network)."""
    if config.name in BACKBONES:
        return BACKBONES.get(config.name)
    if not config.builder:
        raise FeatcacheError(
            f"backbone {config.name!r} is not registered in this process, and its record names no builder: it "
            "was registered with register_backbone() in another process. Publish it through the "
            "'featcache.backbones' entry-point group so every process finds it")
    try:
        found = BACKBONES.expand(import_object(config.builder))
    except Exception as exc:
        raise FeatcacheError(f"backbone {config.name!r}: cannot import its builder {config.builder!r} "
                             f"({type(exc).__name__}: {exc}); install the package that provides it") from exc
    for spec in found:
        if spec.name == config.name:
            return BACKBONES.register(spec if spec.reference else replace(spec, reference=config.builder),
                                      origin=config.builder)
    raise FeatcacheError(f"{config.builder!r} does not provide backbone {config.name!r}")


def _register_builtins() -> None:
    from . import efficientnet_lite, keras_apps, keras_hub

    for spec in (*efficientnet_lite.SPECS, *keras_apps.SPECS, *keras_hub.SPECS):
        BACKBONES.register(spec, origin="featcache")


_register_builtins()

DEFAULT_BACKBONE = "efficientnet_lite0"

__all__ = [
    "BACKBONES", "BackboneConfig", "BackboneSpec", "DEFAULT_BACKBONE", "POOLINGS", "PREPROCESS", "Preprocess",
    "file_digest", "get_backbone", "list_backbones", "register_backbone", "spec_for",
]
