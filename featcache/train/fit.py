"""fit-head: cached features -> a trained head in a run folder.

Three stages, each usable alone (sweep and compare reuse them):
``load_training_data`` (store -> TrainingData: every view of the training images, view 0 of the
validation and test images), ``fit_on_data`` (TrainingData -> FitResult: fit, evaluate), and
``write_run`` (FitResult -> run folder). ``fit_head`` chains them.

Validation fallback: when the store's validation split is empty, a stratified 10% of the training
images (at least one per class that has two or more) is held out for validation; when even that
is impossible, there is no validation: Keras heads train the full ``epochs`` and keep the last
weights, ``logreg`` uses C=1.0 unless C is given. config.json and metrics.json record which
("store", "train-holdout" or "none").

Memory: every split is a selection of one view of the store (``store.rows``: verified chunk
reads). When the features, as float32, fit ``memory_limit`` (default: half the available memory)
they are loaded; otherwise the heads read the views themselves, a few chunks at a time (shuffled
windows of chunks for training, ``window_chunks`` from the budget), and validation and test are
read the same way (view 0 held in memory in the stored dtype when it takes at most an eighth of
the budget). metrics.json records which.

Multi-label stores (several labels per image): the labels are the (n, classes) multi-hot label
sets; the head (one that can: ``Head.multilabel_capable``) gives independent per-class
probabilities; a decision threshold per class is chosen on validation (the best F1 of each class,
0.5 without validation) and recorded in the run folder; metrics are the mean average precision
(macro and micro), per-class AP, F1 at the thresholds and subset accuracy.

Probe options (probe.py): test-time augmentation, a temperature fitted on validation, and a refit
on train + validation with what validation chose; in memory or streamed alike.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import FeatureConfig
from ..errors import FeatcacheError, ParameterError, Remedy, Step, shortlist
from ..heads import EnsembleHead, FitContext, Head, make_head
from ..heads.data import ArrayRows, as_rows
from ..ingest.scan import first_labels
from ..stores import ExtractStats, FeatureRows, FeatureStore, open_store
from .memory import MemoryPlan, plan_memory, resolve_memory_limit
from .metrics import (
    MultiLabelMetrics,
    SplitMetrics,
    choose_thresholds,
    evaluate,
    evaluate_multilabel,
    plot_confusion,
)
from .probe import PLAIN, ProbeOptions, apply_temperature, fit_temperature, view_proba
from .run import (
    CONFIG_FILE,
    RunConfig,
    ValidationSource,
    abandon_run,
    begin_run,
    commit_run,
    final_path,
    is_pending,
)

HOLDOUT_FRACTION = 0.1
METRICS_FILE = "metrics.json"
EVAL_SHARE = 8  # streamed: validation or test view 0 is held in memory when it takes at most this share

Rows = np.ndarray | FeatureRows | ArrayRows  # what heads read (heads/data.py as_rows)


@dataclass(frozen=True)
class TrainingData:
    """The splits of a fit, each a selection of one view of the store's usable rows: arrays when
    they fit in memory, else the store's view itself (read chunk by chunk by the head)."""

    store_path: str
    data_root: str
    keys: list[str]
    configs: list[FeatureConfig]
    dims: list[int]  # each key's feature size, in concatenation order
    classes: list[str]
    X_train: Rows  # (n, V, D): every cached view
    y_train: np.ndarray
    X_val: Rows  # (m, D): view 0 only
    y_val: np.ndarray
    X_test: Rows  # (t, D): view 0 only
    y_test: np.ndarray
    validation: ValidationSource
    seed: int = 0  # of the validation holdout
    stats: dict[str, ExtractStats] = field(default_factory=dict)  # extraction stats per key
    memory: MemoryPlan | None = None
    store: FeatureStore | None = field(default=None, repr=False)  # open while views read from it
    # every view of the validation and test images (m, V, D), for TTA and refit
    X_val_views: Rows | None = field(default=None, repr=False)
    X_test_views: Rows | None = field(default=None, repr=False)

    @property
    def multilabel(self) -> bool:
        """The labels are (n, classes) multi-hot label sets."""
        return np.ndim(self.y_train) == 2

    def close(self) -> None:
        """Close the store the views read from (streamed; a second close does nothing)."""
        if self.store is not None:
            self.store.close()

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.X_train.shape[2:]))

    @property
    def n(self) -> dict[str, int]:
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test),
                "views": int(self.X_train.shape[1])}

    def train_and_validation(self) -> tuple[Rows, np.ndarray]:
        """Every view of train + validation (a refit's rows): arrays joined in memory, one
        selection of the store's view (with its shuffle windows) when streamed."""
        return as_rows(self.X_train).concat(as_rows(self.X_val_views)), np.concatenate([self.y_train, self.y_val])


def _holdout(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of training images to hold out: stratified, at least one per class of >= 2."""
    rng = np.random.default_rng(seed)
    if np.ndim(y) == 2:  # multi-label: stratified by each image's first label (-1: none)
        y = first_labels(y)
    mask = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) >= 2:
            take = max(1, int(round(fraction * len(idx))))
            mask[rng.choice(idx, min(take, len(idx) - 1), replace=False)] = True
    return mask


def load_training_data(store: str | Path, backbones: list[str], seed: int = 0,
                       memory_limit: str | int | None = None) -> TrainingData:
    """Read features of one or more backbone configs (concatenated along D) and check they can train
    a head. Loaded into memory when they fit ``memory_limit`` (a size: "2GB"), else read by the
    heads from the store's view: then ``close()`` the result when done."""
    limit = resolve_memory_limit(memory_limit)
    st = open_store(store)
    try:
        if not backbones:  # the store's one (complete) config, else an error listing them
            try:
                backbones = [st.resolve_key(None)]
            except FeatcacheError as exc:
                raise ParameterError("backbones", f"give one or more: {exc.problem}",
                                     remedy=Remedy("{} lists them", Step.of("info", store=store))) from None
        rows = st.rows(list(backbones))  # verified, lazy: nothing read yet
        if rows.multilabel:  # the label sets are what the heads fit and are scored on
            rows = rows.with_labels(rows.label_sets)
        keys, classes, labels = rows.keys, rows.classes, rows.labels
        stats = {k: st.config_status(k, rows.manifest).stats for k in keys}
        path = str(Path(st.path).resolve())
        plan = plan_memory(rows, limit)  # what loading holds: every usable image's views as float32
        if len(classes) < 2:
            raise FeatcacheError(f"{path} has {len(classes)} class ({', '.join(classes)}); a classifier "
                                 "needs at least two class folders")
        if len(labels) == 0:
            raise FeatcacheError(f"{path} has no usable images for {', '.join(keys)}")
        train, val, test = (rows.positions(s) for s in ("train", "validation", "test"))
        held = labels[train] if labels.ndim == 2 else None
        empty = [c for i, c in enumerate(classes)
                 if not (np.any(held[:, i]) if held is not None else np.any(labels[train] == i))]
        if empty:
            raise FeatcacheError(f"{len(empty)} class(es) have no training images: {shortlist(empty, 10)}. Add images, "
                                 "or re-extract with another split so every class has training images")
        validation = ValidationSource.STORE
        if len(val) == 0:
            held = _holdout(labels[train], HOLDOUT_FRACTION, seed)
            val, train = train[held], train[~held]
            validation = ValidationSource.TRAIN_HOLDOUT if len(val) else ValidationSource.NONE
        common = {"store_path": path, "data_root": rows.manifest.data_root, "keys": keys, "configs": rows.configs,
                  "dims": rows.dims, "classes": classes, "validation": validation, "seed": seed, "stats": stats,
                  "memory": plan, "y_train": labels[train], "y_val": labels[val], "y_test": labels[test]}
        if not plan.streamed:
            X = rows.load()
            st.close()
            X_val, X_test = X[val], X[test]
            return TrainingData(X_train=X[train], X_val=X_val[:, 0], X_test=X_test[:, 0], X_val_views=X_val,
                                X_test_views=X_test, **common)
        views = {name: rows.take(idx) for name, idx in (("validation", val), ("test", test))}
        view0 = {name: _held_if_small(v.view(0), limit // EVAL_SHARE) for name, v in views.items()}
        return TrainingData(X_train=rows.take(train).windowed(plan.window_chunks), X_val=view0["validation"],
                            X_test=view0["test"], X_val_views=views["validation"], X_test_views=views["test"],
                            store=st, **common)
    except BaseException:
        st.close()
        raise


def _held_if_small(rows: FeatureRows, budget: int) -> Rows:
    """View-0 rows read once and held (in the stored dtype) when they take at most ``budget``
    bytes, else the view itself (read again at each pass)."""
    if rows.nbytes(rows.itemsize) > budget or not len(rows):
        return rows
    return ArrayRows(rows.read(np.arange(len(rows))), rows.labels)


@dataclass(frozen=True)
class FitResult:
    head_type: str
    params: dict
    keys: list[str]
    classes: list[str]
    input_dim: int
    n: dict[str, int]
    validation_source: ValidationSource
    fit_seconds: float
    val: SplitMetrics | MultiLabelMetrics | None
    test: SplitMetrics | MultiLabelMetrics | None
    summary: dict
    seed: int
    run_dir: str | None = None
    head: Head | None = field(default=None, repr=False)
    memory: MemoryPlan | None = None
    probe: ProbeOptions = ProbeOptions()
    temperature: float = 1.0  # 1.0: not calibrated
    refit: dict | None = None  # with probe.refit: the parameters fixed and the rows refitted on
    thresholds: list[float] | None = None  # multi-label: each class's decision threshold (None: single-label)

    @property
    def val_accuracy(self) -> float | None:
        return self.val.accuracy if self.val else None

    @property
    def test_accuracy(self) -> float | None:
        return self.test.accuracy if self.test else None

    @property
    def multilabel(self) -> bool:
        return self.thresholds is not None

    def metrics_dict(self) -> dict:
        return {
            "validation": self.val.to_dict() if self.val else None,
            "test": self.test.to_dict() if self.test else None,
            "fit_seconds": round(self.fit_seconds, 4),
            "n": self.n,
            "validation_source": self.validation_source.value,
            "training": self.summary,  # epochs run, chosen C, ...: what fit decided
            "probe": self.probe.to_dict(), "temperature": self.temperature, "refit": self.refit,
            **({"multilabel": True, "thresholds": self.thresholds} if self.multilabel else {}),
            **({"memory": self.memory.to_dict()} if self.memory else {}),  # in memory or streamed
        }

    def to_dict(self) -> dict:
        return {"run_dir": self.run_dir, "head": {"type": self.head_type, "params": self.params},
                "keys": self.keys, "input_dim": self.input_dim, "seed": self.seed, **self.metrics_dict()}


def fit_on_data(data: TrainingData, model: Head, out: str | Path | None = None,
                tensorboard_dir: str | Path | None = None, progress: bool = True,
                evaluate_test: bool = True, checkpoint_every_epoch: bool = False,
                probe: ProbeOptions = PLAIN) -> FitResult:
    """Fit ``model`` (an unfitted head) on loaded data, evaluate it on validation (and test), and
    write the run folder if ``out``. ``probe``: TTA, calibration, refit (probe.py)."""
    check_probe(data, probe)
    check_multilabel(data, model, probe)
    if probe.combine == "ensemble":
        model = EnsembleHead.of(model, data.dims)
    run_dir = prepare_run_dir(out) if out is not None else None
    try:
        return _fit_and_write(data, model, run_dir, tensorboard_dir, progress, evaluate_test,
                              checkpoint_every_epoch, probe)
    except BaseException:
        if run_dir is not None:
            abandon_run(run_dir)  # the run folder stays as it was
        raise


def _fit_and_write(data: TrainingData, model: Head, run_dir: Path | None, tensorboard_dir, progress: bool,
                   evaluate_test: bool, checkpoint_every_epoch: bool, probe: ProbeOptions) -> FitResult:
    has_val = len(data.y_val) > 0
    start = time.perf_counter()
    model.fit(data.X_train, data.y_train, validation=(data.X_val, data.y_val) if has_val else None,
              context=FitContext(n_classes=len(data.classes), workdir=run_dir, tensorboard_dir=tensorboard_dir,
                                 progress=progress, checkpoint_every_epoch=checkpoint_every_epoch,
                                 classes=data.classes, features=data.configs))
    return fitted_result(data, model, time.perf_counter() - start, run_dir, evaluate_test, probe)


def check_multilabel(data: TrainingData, model: Head, probe: ProbeOptions) -> None:
    """A multi-label store needs a head that gives independent per-class probabilities."""
    if not data.multilabel:
        return
    if not getattr(model, "multilabel_capable", False) or probe.combine == "ensemble":
        capable = ", ".join(sorted(n for n, c in _head_classes() if getattr(c, "multilabel_capable", False)))
        what = "an ensemble" if probe.combine == "ensemble" else f"the {model.name} head"
        raise ParameterError("combine" if probe.combine == "ensemble" else "head",
                             f"the store has several labels per image, and {what} gives one label per image",
                             remedy=f"choose a multi-label head: {capable}")
    if probe.calibrate:
        raise ParameterError("calibrate", "a temperature calibrates one softmax over the classes; a multi-label "
                                          "head gives a probability per class, with thresholds chosen on validation",
                             remedy="leave calibration out")


def _head_classes():
    from ..heads import HEADS

    return [(c.name, c) for c in HEADS]


def check_probe(data: TrainingData, probe: ProbeOptions) -> None:
    if probe.combine == "ensemble" and len(data.keys) < 2:
        raise ParameterError("combine", "an ensemble needs features of two or more backbones",
                             remedy="give two or more with backbones", mentions=("backbones",))
    if probe.tta and data.n["views"] == 1:
        raise ParameterError("tta", "the features have no augmented views (extracted with none): there is nothing "
                                    "to average", remedy="extract them with augmented views")


def split_proba(model: Head, data: TrainingData, split: str, tta: bool) -> np.ndarray:
    """A split's probabilities: of view 0, or (tta) the mean over every cached view."""
    if not tta:  # view 0: held in memory when small enough
        return model.predict_proba(data.X_val if split == "validation" else data.X_test)
    return view_proba(model, data.X_val_views if split == "validation" else data.X_test_views, tta)


def refit_on_train_and_validation(model: Head, data: TrainingData) -> tuple[Head, dict]:
    """A new head with what validation chose (epochs, C) fixed, fitted on every view of train +
    validation without validation."""
    X, y = data.train_and_validation()
    return model.refitted(X, y, len(data.classes)), {"params": model.refit_params(), "images": len(y)}


def fitted_result(data: TrainingData, model: Head, fit_seconds: float, run_dir: Path | None = None,
                  evaluate_test: bool = True, probe: ProbeOptions = PLAIN) -> FitResult:
    """A fitted head's FitResult: evaluated on validation (and test), its run folder written if
    ``run_dir``. Validation is scored (and the temperature fitted) before any refit: the refit
    head has seen those images."""
    has_val = len(data.y_val) > 0
    val_proba = split_proba(model, data, "validation", probe.tta) if has_val else None
    temperature = fit_temperature(val_proba, data.y_val) if probe.calibrate and has_val else 1.0
    thresholds = None
    if data.multilabel:  # chosen on validation before any refit, as the temperature is
        thresholds = (choose_thresholds(data.y_val, val_proba) if has_val
                      else np.full(len(data.classes), 0.5)).round(6).tolist()
    refit = None
    if probe.refit and has_val:
        start = time.perf_counter()
        model, refit = refit_on_train_and_validation(model, data)
        fit_seconds += time.perf_counter() - start
    result = FitResult(
        head_type=model.name, params=model.params_record(), keys=data.keys, classes=data.classes,
        input_dim=data.input_dim, n=data.n, validation_source=data.validation, fit_seconds=fit_seconds,
        val=_evaluate(data, data.y_val, apply_temperature(val_proba, temperature), thresholds) if has_val else None,
        test=None, summary=model.summary(), seed=data.seed, head=model, memory=data.memory, probe=probe,
        temperature=temperature, refit=refit, thresholds=thresholds,
    )
    if evaluate_test:
        result = evaluate_on_test(result, data)
    if run_dir is not None:
        result = replace(result, run_dir=str(write_run(result, data, run_dir)))
    return result


def evaluate_on_test(result: FitResult, data: TrainingData) -> FitResult:
    """``result`` with its test metrics (itself when there are no test images)."""
    if not len(data.y_test):
        return result
    proba = split_proba(result.head, data, "test", result.probe.tta)
    return replace(result, test=_evaluate(data, data.y_test, apply_temperature(proba, result.temperature),
                                          result.thresholds))


def _evaluate(data: TrainingData, y: np.ndarray, proba: np.ndarray, thresholds: list[float] | None):
    if thresholds is not None:
        return evaluate_multilabel(y, proba, data.classes, np.asarray(thresholds))
    return evaluate(y, proba, data.classes)


def prepare_run_dir(out: str | Path, adopt: tuple[str, ...] = ()) -> Path:
    """The folder a new version of the run folder ``out`` is written in (the head's fit may put
    its history there), beside ``out`` and under its lock; ``write_run`` puts it in place.
    ``adopt``: files ``out`` may hold before it is a run folder (run.py ``begin_run``)."""
    return begin_run(out, "out", adopt=adopt)


def write_run(result: FitResult, data: TrainingData, out: str | Path, adopt: tuple[str, ...] = ()) -> Path:
    """Head files, config.json, metrics.json and a confusion-matrix PNG per evaluated split, in
    the folder ``prepare_run_dir`` gave, then put in place of the run folder in one step. ``out``
    may also be a finished run folder (a sweep's best trial, now with its test metrics): it is
    then rewritten the same way, keeping what its head's fit left there (history). Returns the
    run folder (``result`` is a frozen record: the caller keeps the path). ``adopt``: files a
    folder that is not a run folder yet may hold; they are kept (copied in, as history is)."""
    if not is_pending(out):
        finished = final_path(out)
        out = prepare_run_dir(finished, adopt)
        if finished.is_dir():
            shutil.copytree(finished, out, dirs_exist_ok=True, symlinks=True)
            (out / CONFIG_FILE).unlink(missing_ok=True)
    run_dir = Path(out)
    try:
        _write_files(result, data, run_dir)
    except BaseException:
        abandon_run(run_dir)
        raise
    return commit_run(run_dir)


def _write_files(result: FitResult, data: TrainingData, run_dir: Path) -> Path:
    result.head.save(run_dir)
    pngs = []
    for split, m in (("validation", result.val), ("test", result.test)):
        if m is not None and not result.multilabel:  # a confusion matrix pairs one true and one predicted label
            png = run_dir / f"confusion_{split}.png"
            plot_confusion(m, data.classes, png, f"{result.head_type} on {split}: accuracy {m.accuracy:.3f} (n={m.n})")
            pngs.append(png.name)
    (run_dir / METRICS_FILE).write_text(json.dumps(result.metrics_dict(), indent=2))
    optional = {"history": "history.csv", "checkpoint": "checkpoint.weights.h5"}
    files = {"head": list(type(result.head).files), "metrics": METRICS_FILE, "confusion": pngs,
             **{k: v for k, v in optional.items() if (run_dir / v).exists()}}
    RunConfig(
        featcache_version=__version__, head_type=result.head_type, head_params=result.params,
        features=data.configs, keys=data.keys, classes=data.classes, store_path=data.store_path,
        data_root=data.data_root, input_dim=data.input_dim, seed=result.seed, validation=data.validation,
        files=files, created=datetime.now(UTC).isoformat(timespec="seconds"), probe=result.probe,
        temperature=result.temperature, thresholds=result.thresholds,
    ).write(run_dir)
    return final_path(run_dir)


def fit_head(store_path: str | Path, backbones: list[str], head: Head | str = "mlp",
             out: str | Path | None = None, seed: int = 0, tensorboard_dir: str | Path | None = None,
             checkpoint_every_epoch: bool = False, progress: bool = True,
             memory_limit: str | int | None = None, probe: ProbeOptions = PLAIN) -> FitResult:
    """Train ``head`` (a Head, or the name of one with its default parameters) on the cached
    features of ``backbones`` (concatenated) in ``store_path``. ``seed`` draws the validation
    holdout when the store has no validation split. Features larger than ``memory_limit`` (a size
    such as "2GB"; default half the available memory) are streamed from the store. ``probe``:
    test-time augmentation, calibration, refit on train + validation (probe.py).

    With ``out``, writes the run folder that `featcache.train.run.load_run` (and export/predict) read.
    """
    model = make_head(head) if isinstance(head, str) else head
    data = load_training_data(store_path, backbones, seed, memory_limit)
    try:
        return fit_on_data(data, model, out, tensorboard_dir, progress, checkpoint_every_epoch=checkpoint_every_epoch,
                           probe=probe)
    finally:
        data.close()


__all__ = ["FitResult", "TrainingData", "evaluate_on_test", "fit_head", "fit_on_data", "fitted_result",
           "load_training_data", "prepare_run_dir", "write_run"]
