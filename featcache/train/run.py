"""A run folder: config.json (everything to reproduce the run and re-attach the backbone) + head files.

config.json::

    {
      "featcache_version": "0.2.0",
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
      "multilabel": true, "thresholds": [0.42, ...],   # only for several labels per image: per-class cut-offs
      "files": {"head": ["head.keras"], "metrics": "metrics.json", ...},
      "created": "2025-01-01T12:00:00+00:00",
      "integrity": {"algorithm": "sha256", "record": "<digest of every other key>",
                    "files": {"head.keras": "<digest>", ...}}
    }

A run folder is replaced in one step (``begin_run`` -> write into the folder it returns ->
``commit_run``): it is written beside its final name and renamed into place (featcache/atomic.py),
under ``<run>.lock``, so a killed or concurrent fit never leaves one run's head with another's
config.json. ``integrity`` binds config.json (classes, temperature, features, ...) and the files
that make predictions (the head's, a fine-tuned backbone) by their SHA-256: ``load_run`` refuses a
folder where any of them changed. A record without it (written before it existed) is read as before.
Every number of the record that sizes an allocation is bounded before anything is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from .. import atomic
from ..backbones.model import MAX_INPUT_SIZE
from ..config import FeatureConfig
from ..errors import FeatcacheError, ParameterError, Remedy, Step, describe_error
from ..heads import Head, get_head_class
from ..stores.lock import RunLock
from .probe import ProbeOptions

CONFIG_FILE = "config.json"
INTEGRITY = "integrity"
# Bounds on what a record may claim, checked before anything is allocated from it (a hand-edited
# input size of 100000 would otherwise ask for a 120 GB input batch).
MAX_INPUT_DIM = 1 << 20  # concatenated feature size: the widest backbones give a few thousand per tap
MAX_CLASSES = 1 << 16
MAX_FEATURES = 64  # backbone configurations concatenated in one run
MAX_CONFIG_BYTES = 16 << 20  # config.json: a few KB, a few MB with thousands of class names
MAX_RECORDED_VIEWS = 1024  # augmented views a record may claim (test-time augmentation computes each)


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
    integrity: dict | None = None  # as read: the digests load_run checks the folder's files against
    thresholds: list[float] | None = None  # multi-label: each class's decision threshold (None: single-label)

    @property
    def multilabel(self) -> bool:
        return self.thresholds is not None

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
            **({"multilabel": True, "thresholds": list(self.thresholds)} if self.thresholds is not None else {}),
            **({INTEGRITY: self.integrity} if self.integrity is not None else {}),  # as read; write() makes a new one
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
        if not 2 <= len(classes) <= MAX_CLASSES:
            raise InvalidRunConfig(f"'classes' must list 2 to {MAX_CLASSES} classes, not {len(classes)}")
        if len(features) > MAX_FEATURES:
            raise InvalidRunConfig(f"'features' lists {len(features)} backbones, more than the {MAX_FEATURES} "
                                   "a run can concatenate")
        input_dim = _get(d, "input_dim", int)
        if not 1 <= input_dim <= MAX_INPUT_DIM:
            raise InvalidRunConfig(f"'input_dim' must be 1 to {MAX_INPUT_DIM}, not {input_dim}")
        return cls(
            featcache_version=_get(d, "featcache_version", str), head_type=_get(head, "type", str, where="head"),
            head_params=dict(_get(head, "params", dict, where="head", default={})),
            features=[_feature(f, i) for i, f in enumerate(features)], keys=_get(d, "keys", list, str),
            classes=classes, store_path=_get(store, "path", str, where="store"),
            data_root=_get(store, "data_root", str, where="store", default=""),
            input_dim=input_dim, seed=_get(d, "seed", int, default=0),
            validation=ValidationSource(_get(d, "validation", str, default="store")),
            files=dict(_get(d, "files", dict, default={})), created=_get(d, "created", str, default=""),
            probe=ProbeOptions(**{k: v for k, v in _get(d, "probe", dict, default={}).items()
                                  if k in ProbeOptions.__dataclass_fields__}),
            temperature=_temperature(d),
            integrity=_integrity(d),
            thresholds=_thresholds(d, len(classes)),
        )

    def write(self, folder: Path, extra: dict | None = None) -> Path:
        """config.json (with ``extra`` sections RunConfig does not read), its integrity record over
        the head files (and a fine-tuned backbone) already in ``folder``."""
        folder = Path(folder)
        record = {**self.to_dict(), **(extra or {})}
        bound = [*self.files.get("head", []), *([self.files["backbone"]] if "backbone" in self.files else [])]
        record[INTEGRITY] = {"algorithm": "sha256", "record": _record_digest(record),
                             "files": {name: _file_digest(folder / name) for name in bound}}
        path = folder / CONFIG_FILE
        fd = atomic.create_exclusive(path)  # a new file in a new folder: nothing there to follow
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record, indent=2))
        return path

    @classmethod
    def read(cls, folder: str | Path) -> RunConfig:
        path = Path(folder).expanduser() / CONFIG_FILE
        if not path.is_file():
            raise FeatcacheError(f"{folder} is not a featcache run folder (no {CONFIG_FILE})", remedy=Remedy(
                "create one with {}", Step.of("fit_head", store="STORE", backbones="BACKBONE", out="DIR")))
        try:
            with path.open("rb") as f:
                text = f.read(MAX_CONFIG_BYTES + 1)  # json.loads decodes; a binary file is then a ValueError there
        except OSError as exc:
            raise FeatcacheError(f"{path} cannot be read ({exc.strerror})") from exc
        if len(text) > MAX_CONFIG_BYTES:
            raise FeatcacheError(f"{path} is larger than a run config can be ({MAX_CONFIG_BYTES >> 20} MiB): it is "
                                 "another file or was damaged", remedy="restore the folder from a copy or fit the "
                                                                       "head again")
        try:
            d = json.loads(text)
        except ValueError as exc:  # UnicodeDecodeError included
            raise FeatcacheError(f"{path} is not valid JSON ({describe_error(exc)}); restore it or fit the head again") from exc
        try:
            return cls.from_dict(d)
        except FeatcacheError as exc:
            raise FeatcacheError(f"{path}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, InvalidRunConfig) else describe_error(exc)
            raise FeatcacheError(f"{path} is not a valid run config: {reason}; restore it or fit the "
                                 "head again") from exc


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


def _record_digest(d: dict) -> str:
    """SHA-256 of every key of config.json but the integrity record, in one canonical form."""
    rest = {k: v for k, v in d.items() if k != INTEGRITY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _integrity(d: dict) -> dict | None:
    """The integrity record, checked against the rest of config.json (an edit of any field)."""
    if INTEGRITY not in d:
        return None  # a run folder written before integrity records
    rec = d[INTEGRITY]
    files = rec.get("files") if isinstance(rec, dict) else None
    if (not isinstance(files, dict) or rec.get("algorithm") != "sha256"
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
        raise InvalidRunConfig(f"its {INTEGRITY!r} record is damaged")
    if rec.get("record") != _record_digest(d):
        raise InvalidRunConfig("it was changed after the run was written (its content does not match its "
                               f"{INTEGRITY!r} digest)")
    return rec


def _thresholds(d: dict, n_classes: int) -> list[float] | None:
    if not d.get("multilabel"):
        return None
    t = d.get("thresholds")
    if (not isinstance(t, list) or len(t) != n_classes
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in t)):
        raise InvalidRunConfig(f"'thresholds' must list one number from 0 to 1 per class ({n_classes}), "
                               f"not {t!r:.60}")
    return [float(v) for v in t]


def _temperature(d: dict) -> float:
    t = d.get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, int | float) or not t > 0:
        raise InvalidRunConfig(f"'temperature' must be a positive number, not {t!r:.60}")
    return float(t)


def _feature(d, i: int) -> FeatureConfig:
    if not isinstance(d, dict):
        raise InvalidRunConfig(f"'features[{i}]' must be an object, not {d!r:.60}")
    try:
        config = FeatureConfig.from_dict(d)
    except KeyError as exc:
        raise InvalidRunConfig(f"'features[{i}]' misses {exc}") from exc
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidRunConfig(f"'features[{i}]': {describe_error(exc)}") from exc
    size = config.backbone.input_size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_INPUT_SIZE:
        raise InvalidRunConfig(f"'features[{i}].backbone.input_size' must be a whole number from 1 to "
                               f"{MAX_INPUT_SIZE} (as extract allows), not {size!r:.60}")
    if not config.augment.augmented_views <= MAX_RECORDED_VIEWS:
        raise InvalidRunConfig(f"'features[{i}].augment.augmented_views' must be at most {MAX_RECORDED_VIEWS}, not "
                               f"{config.augment.augmented_views}")
    return config


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


# A zip member is inflated by its readers (Keras, NumPy) up to the size it declares: bounded here
# before anything is read. Weights barely compress, so a real archive is far from these.
MAX_MEMBER_RATIO = 200  # declared size / stored size, for a member declaring over MAX_SMALL_MEMBER
MAX_SMALL_MEMBER = 64 << 20
MAX_ARCHIVE_SIZE = 16 << 30  # every member together, inflated


def check_archive(path: Path, fix: str) -> None:
    """Keras reports a file that is no zip as "File not found", NumPy as a bare BadZipFile: say
    what the file is instead (a truncated copy, another format renamed), and ``fix``. An archive
    whose members would inflate far beyond their stored size (a zip bomb) is refused unread."""
    kind = ARCHIVES.get(path.suffix)
    if not kind or not path.is_file():
        return
    if not zipfile.is_zipfile(path):
        raise FeatcacheError(f"{path} is not a {kind}: it is truncated, damaged or another kind of file; {fix}")
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FeatcacheError(f"{path} is a damaged {kind} ({describe_error(exc)}); {fix}") from exc
    bomb = next((m for m in members if m.file_size > MAX_SMALL_MEMBER
                 and m.file_size > MAX_MEMBER_RATIO * max(m.compress_size, 1)), None)
    total = sum(m.file_size for m in members)
    if bomb is not None or total > MAX_ARCHIVE_SIZE:
        what = (f"its member {bomb.filename!r} would inflate from {bomb.compress_size} bytes to {bomb.file_size}"
                if bomb is not None else f"its members would inflate to {total} bytes")
        raise FeatcacheError(f"{path} is not a {kind} featcache reads: {what} (over the bounds a model file "
                             f"keeps); {fix}")


def check_integrity(run_dir: Path, config: RunConfig, head_files: tuple[str, ...]) -> None:
    """The head files (and a fine-tuned backbone) are the ones config.json was written with."""
    if config.integrity is None:
        return
    digests = config.integrity["files"]
    bound = [*head_files, *([config.files["backbone"]] if "backbone" in config.files else [])]
    unbound = [f for f in bound if f not in digests]
    changed = [f for f, digest in digests.items()
               if not (run_dir / f).is_file() or (run_dir / f).is_symlink() or _file_digest(run_dir / f) != digest]
    if unbound or changed:
        raise FeatcacheError(f"run folder {run_dir}: {', '.join(changed or unbound)} "
                             f"{'is not' if len(changed or unbound) == 1 else 'are not'} the file(s) its "
                             f"{CONFIG_FILE} was written with (replaced, edited or from another run)",
                             remedy="restore the folder from a copy or fit the head again")


# -- writing a run folder in one step ---------------------------------------------------------------

@dataclass
class _Pending:
    final: Path
    lock: RunLock


_PENDING: dict[Path, _Pending] = {}  # folder being written -> where it goes, and the lock held meanwhile


def begin_run(out: str | Path, param: str = "out", marker: str = CONFIG_FILE,
              adopt: tuple[str, ...] = ()) -> Path:
    """Start a new version of the run folder ``out``: take its lock (another writer: refused),
    clear what a killed writer left, and return a new empty folder beside it to write into.
    ``commit_run`` puts it in place; until then ``out`` stays as it was. ``marker``: the file that
    makes an existing folder one of featcache's (anything else is never replaced). ``adopt``: file
    names a folder without the marker may hold yet (a search's records, kept beside the run)."""
    final = Path(out).expanduser().resolve()
    for staging, pending in list(_PENDING.items()):
        if pending.final == final:  # this process gave up an earlier try (an exception) without cleaning up
            abandon_run(staging)
    foreign = final.is_dir() and any(p.name not in adopt for p in final.iterdir())
    if foreign and not (final / marker).exists():
        what = "run folder" if marker == CONFIG_FILE else f"output folder (it has no {marker})"
        raise ParameterError(param, f"{final} exists and is not a featcache {what}; choose another folder")
    if final.exists() and not final.is_dir():
        raise ParameterError(param, f"{final} is a file, not a folder; choose another path")
    make_folder(final.parent, param)
    try:
        lock = RunLock.acquire(final)
    except OSError as exc:  # a read-only folder, no permission
        raise ParameterError(param, f"cannot write in {final.parent} ({exc.strerror})") from exc
    try:
        atomic.remove_leftovers(final)
        staging = atomic.new_folder(final)
    except OSError as exc:
        lock.release()
        raise ParameterError(param, f"cannot create a folder beside {final} ({exc.strerror})") from exc
    except BaseException:
        lock.release()
        raise
    _PENDING[staging] = _Pending(final, lock)
    return staging


def is_pending(folder: str | Path) -> bool:
    """Whether ``folder`` is a run folder begun here and not yet committed."""
    return Path(folder) in _PENDING


def final_path(folder: str | Path) -> Path:
    """Where the pending ``folder`` goes (itself, for any other folder)."""
    pending = _PENDING.get(Path(folder))
    return pending.final if pending else Path(folder).expanduser().resolve()


def commit_run(staging: Path) -> Path:
    """Put the complete folder ``staging`` in place of its run folder (the old one deleted) and
    release the lock. Returns the run folder."""
    pending = _PENDING.pop(Path(staging))
    try:
        atomic.replace_folder(Path(staging), pending.final)
    finally:
        pending.lock.release()
    return pending.final


def abandon_run(staging: Path) -> None:
    """Give up a pending version: delete it, release the lock; the run folder stays as it was."""
    pending = _PENDING.pop(Path(staging), None)
    if pending is not None:
        atomic.remove_path(Path(staging))
        pending.lock.release()


@contextlib.contextmanager
def replaced_folder(out: str | Path, marker: str, param: str = "out") -> Iterator[tuple[Path, Path]]:
    """``with replaced_folder(out, "audit.json") as (staging, final):`` write the outputs into
    ``staging``; on success they replace ``final`` in one step, on any failure (or kill) ``final``
    stays as it was. A second writer of ``out`` is refused meanwhile."""
    staging = begin_run(out, param, marker)
    try:
        yield staging, final_path(staging)
    except BaseException:
        abandon_run(staging)
        raise
    commit_run(staging)


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
        raise FeatcacheError(f"{where}: {exc}; restore it or fit the head again") from exc
    missing = [f for f in cls.files if not (run_dir / f).exists()]
    if missing:
        raise FeatcacheError(f"run folder {run_dir} is missing {', '.join(missing)}; fit the head again")
    for f in cls.files:  # first: "truncated" says more than "changed"
        check_archive(run_dir / f, "fit the head again")
    check_integrity(run_dir, config, cls.files)
    try:
        head = cls.load(run_dir, config.head_params)
    except Exception as exc:  # a head's loader meets whatever a damaged file holds
        raise FeatcacheError(f"run folder {run_dir}: cannot load the {config.head_type} head from "
                             f"{', '.join(cls.files)} ({describe_error(exc)}); fit the head again") from exc
    n_classes = getattr(head, "n_classes_", len(config.classes))
    if n_classes != len(config.classes):
        raise FeatcacheError(f"{where} lists {len(config.classes)} classes but the {config.head_type} head in "
                             f"{run_dir} has {n_classes} outputs; restore config.json or fit the head again")
    return TrainedRun(run_dir, config, head)
