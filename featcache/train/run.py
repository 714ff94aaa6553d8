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
      "probe": {"tta": false, "calibrate": false, "refit": false, "combine": "concat"},  # ProbeOptions
      "temperature": 1.0,   # divides the head's log-probabilities (calibration; 1.0: none)
      "files": {"head": ["head.keras"], "metrics": "metrics.json", ...},
      "created": "2025-01-01T12:00:00+00:00"
    }
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..config import FeatureConfig
from ..errors import FeatcacheError, ParameterError, Remedy, Step, describe_error
from ..heads import Head, get_head_class
from .probe import ProbeOptions

CONFIG_FILE = "config.json"


class ValidationSource(StrEnum):
    """Where a run's validation images came from."""

    STORE = "store"  # the store's validation split
    TRAIN_HOLDOUT = "train-holdout"  # the store has none: a stratified part of the training images
    NONE = "none"  # too few images even for that: no validation, no early stopping


@dataclass(frozen=True)
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
    probe: ProbeOptions = ProbeOptions()
    temperature: float = 1.0

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
            "probe": self.probe.to_dict(),
            "temperature": self.temperature,
            "files": self.files,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Parse config.json; a hand-edited one fails with a ValueError naming the key and the problem."""
        if not isinstance(d, dict):
            raise InvalidRunConfig(f"it holds {type(d).__name__}, not a JSON object")
        head, store = _get(d, "head", dict), _get(d, "store", dict)
        features = _get(d, "features", list)
        if not features:
            raise InvalidRunConfig("'features' is empty: the run records no backbone")
        classes = _get(d, "classes", list, str)
        if len(set(classes)) != len(classes):
            raise InvalidRunConfig("'classes' names a class twice")
        return cls(
            featcache_version=_get(d, "featcache_version", str), head_type=_get(head, "type", str, where="head"),
            head_params=dict(_get(head, "params", dict, where="head", default={})),
            features=[_feature(f, i) for i, f in enumerate(features)], keys=_get(d, "keys", list, str),
            classes=classes, store_path=_get(store, "path", str, where="store"),
            data_root=_get(store, "data_root", str, where="store", default=""),
            input_dim=_get(d, "input_dim", int), seed=_get(d, "seed", int, default=0),
            validation=ValidationSource(_get(d, "validation", str, default="store")),
            files=dict(_get(d, "files", dict, default={})), created=_get(d, "created", str, default=""),
            probe=ProbeOptions(**{k: v for k, v in _get(d, "probe", dict, default={}).items()
                                  if k in ProbeOptions.__dataclass_fields__}),
            temperature=_temperature(d),
        )

    def write(self, folder: Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def read(cls, folder: str | Path) -> RunConfig:
        path = Path(folder).expanduser() / CONFIG_FILE
        if not path.is_file():
            raise FeatcacheError(f"{folder} is not a featcache run folder (no {CONFIG_FILE})", remedy=Remedy(
                "create one with {}", Step.of("fit_head", store="STORE", backbones="BACKBONE", out="DIR")))
        try:
            text = path.read_bytes()  # json.loads decodes; a binary file is then a ValueError there
        except OSError as exc:
            raise FeatcacheError(f"{path} cannot be read ({exc.strerror})") from exc
        try:
            d = json.loads(text)
        except ValueError as exc:  # UnicodeDecodeError included
            raise FeatcacheError(f"{path} is not valid JSON ({describe_error(exc)}); restore it or re-run fit-head") from exc
        try:
            return cls.from_dict(d)
        except FeatcacheError as exc:
            raise FeatcacheError(f"{path}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, InvalidRunConfig) else describe_error(exc)
            raise FeatcacheError(f"{path} is not a valid run config: {reason}; restore it or re-run "
                                 "fit-head") from exc


class InvalidRunConfig(ValueError):
    """config.json parses as JSON but not as a run config (a hand edit, a truncated write)."""


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer"}


def _get(d: dict, key: str, kind: type, item: type | None = None, where: str = "", default=...):
    """``d[key]``, checked to be a ``kind`` (of ``item``s): what a hand edit can break is named in
    the error, not left to surface as a KeyError or TypeError deep inside."""
    name = f"{where}.{key}" if where else key
    if key not in d:
        if default is ...:
            raise InvalidRunConfig(f"missing {name!r}")
        return default
    value = d[key]
    # bool is an int to Python, but not a valid count or seed in a config
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)) or (
            item is not None and not all(isinstance(v, item) for v in value)):
        what = _TYPE_NAMES[kind] + (f" of {_TYPE_NAMES[item].split()[-1]}s" if item else "")
        raise InvalidRunConfig(f"{name!r} must be {what}, not {value!r:.60}")
    return value


def _temperature(d: dict) -> float:
    t = d.get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, int | float) or not t > 0:
        raise InvalidRunConfig(f"'temperature' must be a positive number, not {t!r:.60}")
    return float(t)


def _feature(d, i: int) -> FeatureConfig:
    if not isinstance(d, dict):
        raise InvalidRunConfig(f"'features[{i}]' must be an object, not {d!r:.60}")
    try:
        return FeatureConfig.from_dict(d)
    except KeyError as exc:
        raise InvalidRunConfig(f"'features[{i}]' misses {exc}") from exc
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidRunConfig(f"'features[{i}]': {describe_error(exc)}") from exc


def make_folder(path: Path, param: str) -> Path:
    """``mkdir -p path``; a file in the way, or a folder that cannot be made, is a bad value of the
    library parameter ``param`` (the CLI names its flag)."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise ParameterError(param, f"{p} is a file, not a folder; choose another path")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(param, f"cannot create the folder {path} ({exc.strerror})") from exc
    return path


ARCHIVES = {".keras": "Keras zip archive", ".npz": "NumPy .npz (zip) archive"}


def check_archive(path: Path, fix: str) -> None:
    """Keras reports a file that is no zip as "File not found", NumPy as a bare BadZipFile: say
    what the file is instead (a truncated copy, another format renamed), and ``fix``."""
    kind = ARCHIVES.get(path.suffix)
    if kind and path.is_file() and not zipfile.is_zipfile(path):
        raise FeatcacheError(f"{path} is not a {kind}: it is truncated, damaged or another kind of file; {fix}")


@dataclass
class TrainedRun:
    path: Path
    config: RunConfig
    head: Head


def load_run(run_dir: str | Path) -> TrainedRun:
    """The run's config and its trained head, ready for predict_proba or to_keras(). A hand-edited
    or damaged run folder is a FeatcacheError naming the folder and the problem."""
    run_dir = Path(run_dir).expanduser().resolve()
    config = RunConfig.read(run_dir)
    where = run_dir / CONFIG_FILE
    try:
        cls = get_head_class(config.head_type)
        cls(**config.head_params)  # a ParameterError here must not be worded as a flag of the command
    except FeatcacheError as exc:
        raise FeatcacheError(f"{where}: {exc}; restore it or re-run fit-head") from exc
    missing = [f for f in cls.files if not (run_dir / f).exists()]
    if missing:
        raise FeatcacheError(f"run folder {run_dir} is missing {', '.join(missing)}; re-run fit-head")
    for f in cls.files:
        check_archive(run_dir / f, "re-run fit-head")
    try:
        head = cls.load(run_dir, config.head_params)
    except Exception as exc:  # a head's loader meets whatever a damaged file holds
        raise FeatcacheError(f"run folder {run_dir}: cannot load the {config.head_type} head from "
                             f"{', '.join(cls.files)} ({describe_error(exc)}); re-run fit-head") from exc
    n_classes = getattr(head, "n_classes_", len(config.classes))
    if n_classes != len(config.classes):
        raise FeatcacheError(f"{where} lists {len(config.classes)} classes but the {config.head_type} head in "
                             f"{run_dir} has {n_classes} outputs; restore config.json or re-run fit-head")
    return TrainedRun(run_dir, config, head)
