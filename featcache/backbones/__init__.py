"""Registry of backbones. Built in: EfficientNet-Lite0/1/2 (packaged weights) and keras.applications.

Register your own::

    from featcache.backbones import BackboneSpec, PREPROCESS, register_backbone

    register_backbone(BackboneSpec(
        name="my_net", input_size=160, feature_dim=256, preprocess=PREPROCESS["tf"],
        build_features=lambda size, weights: my_keras_model(size),  # -> 4-D feature map
        weights_source="my lab's checkpoint"))
"""

from __future__ import annotations

from .spec import POOLINGS, PREPROCESS, BackboneConfig, BackboneSpec, Preprocess, file_digest

_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec, *, overwrite: bool = False) -> BackboneSpec:
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"backbone {spec.name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[spec.name] = spec
    return spec


def _register_builtins() -> None:
    from . import efficientnet_lite, keras_apps

    for variant in (0, 1, 2):
        register_backbone(efficientnet_lite.make_spec(variant))
    for spec in keras_apps.SPECS:
        register_backbone(spec)


def get_backbone(name: str) -> BackboneSpec:
    from ..errors import FeatcacheError

    try:
        return _REGISTRY[name]
    except KeyError:
        raise FeatcacheError(
            f"unknown backbone {name!r}; known backbones: {', '.join(sorted(_REGISTRY))} "
            "(see `featcache backbones`)"
        ) from None


def list_backbones() -> list[BackboneSpec]:
    return list(_REGISTRY.values())


_register_builtins()

DEFAULT_BACKBONE = "efficientnet_lite0"

__all__ = [
    "BackboneConfig", "BackboneSpec", "DEFAULT_BACKBONE", "POOLINGS", "PREPROCESS", "Preprocess",
    "file_digest", "get_backbone", "list_backbones", "register_backbone",
]
