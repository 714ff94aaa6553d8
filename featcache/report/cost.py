"""Backbone parameter counts, for the cost columns of compare.

A built-in backbone declares its count (``BackboneSpec.parameters``): nothing is built. A tap (the
network up to a block) or a plugin that declares none is built once to count it (random weights:
nothing is downloaded or read), and the count kept in a small JSON cache.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from ..backbones.spec import BackboneConfig


def _cache_file() -> Path:
    root = Path(os.environ.get("FEATCACHE_DATA", Path.home() / ".cache" / "featcache" / "data")).parent
    return root / "backbone_params.json"


def backbone_parameters(config: BackboneConfig) -> int | None:
    """Weights of the backbone's feature extractor (the pooling adds none; a tap counts the network
    up to its block); None when it cannot be built."""
    from ..backbones import spec_for
    from ..backbones.model import build_feature_extractor

    try:
        declared = None if config.tap else spec_for(config).parameters
    except Exception:  # a plugin that cannot load here: the column shows "-"
        return None
    if declared is not None:
        return declared
    # the architecture, not the weights file, decides the count; flatten-free nets ignore the size
    tag = f"{config.builder or config.name}|{config.label}|{config.input_size}"
    path = _cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if tag in cache:
        return cache[tag]
    try:
        count = int(build_feature_extractor(replace(config, weights="random")).count_params())
    except Exception:  # a plugin that cannot build here: the column shows "-"
        return None
    cache[tag] = count
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: parallel compares never read half a file
    except OSError:
        pass
    return count
