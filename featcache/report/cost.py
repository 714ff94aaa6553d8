"""Backbone parameter counts, for the cost columns of compare.

Building a network only to count its weights takes seconds for a large one, so each count is
computed once (random weights: nothing is downloaded or read) and kept in a small JSON cache.
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
    from ..backbones.model import build_feature_extractor

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
