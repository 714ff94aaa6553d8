"""A run folder: config.json (everything to reproduce the run and re-attach the backbone) + head files.

config.json::

    {
      "featcache_version": "0.1.0",
      "head": {"type": "mlp", "params": {...}},
      "features": [FeatureConfig.to_dict(), ...],   # in concatenation order
      "keys": ["efficientnet_lite0-224-avg-v3-e09750ec", ...],
      "classes": ["s1", "s10", ...],
      "store": {"path": "/abs/feats.zarr", "data_root": "/abs/data"},
      "input_dim": 1280,
      "seed": 0,
      "validation": "store" | "train-holdout" | "none",   # ValidationSource
      "files": {"head": ["head.keras"], "metrics": "metrics.json", ...},
      "created": "2025-01-01T12:00:00+00:00"
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..config import FeatureConfig
from ..errors import FeatcacheError
from ..heads import Head, get_head_class

CONFIG_FILE = "config.json"


class ValidationSource(StrEnum):
    """Where a run's validation images came from."""

    STORE = "store"  # the store's validation split
    TRAIN_HOLDOUT = "train-holdout"  # the store has none: a stratified part of the training images
    NONE = "none"  # too few images even for that: no validation, no early stopping


@dataclass
class RunConfig:
    featcache_version: str
    head_type: str
    head_params: dict
    features: list[FeatureConfig]
    keys: list[str]
    classes: list[str]
    store_path: str
    data_root: str
    input_dim: int
    seed: int
    validation: ValidationSource = ValidationSource.STORE
    files: dict = field(default_factory=dict)
    created: str = ""

    def to_dict(self) -> dict:
        return {
            "featcache_version": self.featcache_version,
            "head": {"type": self.head_type, "params": self.head_params},
            "features": [f.to_dict() for f in self.features],
            "keys": self.keys,
            "classes": self.classes,
            "store": {"path": self.store_path, "data_root": self.data_root},
            "input_dim": self.input_dim,
            "seed": self.seed,
            "validation": self.validation.value,
            "files": self.files,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return cls(
            featcache_version=d["featcache_version"], head_type=d["head"]["type"],
            head_params=dict(d["head"].get("params", {})),
            features=[FeatureConfig.from_dict(f) for f in d["features"]], keys=list(d["keys"]),
            classes=list(d["classes"]), store_path=d["store"]["path"], data_root=d["store"].get("data_root", ""),
            input_dim=int(d["input_dim"]), seed=int(d.get("seed", 0)), validation=ValidationSource(d.get("validation", "store")),
            files=dict(d.get("files", {})), created=d.get("created", ""),
        )

    def write(self, folder: Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def read(cls, folder: str | Path) -> RunConfig:
        path = Path(folder).expanduser() / CONFIG_FILE
        if not path.is_file():
            raise FeatcacheError(f"{folder} is not a featcache run folder (no {CONFIG_FILE}); "
                                 "create one with `featcache fit-head STORE -b BACKBONE --out DIR`")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FeatcacheError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise FeatcacheError(f"{path} is not a valid run config ({type(exc).__name__}: {exc})") from exc


@dataclass
class TrainedRun:
    path: Path
    config: RunConfig
    head: Head


def load_run(run_dir: str | Path) -> TrainedRun:
    """The run's config and its trained head, ready for predict_proba or to_keras()."""
    run_dir = Path(run_dir).expanduser().resolve()
    config = RunConfig.read(run_dir)
    cls = get_head_class(config.head_type)
    missing = [f for f in cls.files if not (run_dir / f).exists()]
    if missing:
        raise FeatcacheError(f"run folder {run_dir} is missing {', '.join(missing)}; re-run fit-head")
    return TrainedRun(run_dir, config, cls.load(run_dir, config.head_params))
