"""The Head interface and the registry of head types.

scikit-learn's estimator rules: parameters in the constructor (declared once, as ``Param``s),
learned state set by ``fit`` with a trailing underscore (``classes_``, ``model_``, ...), ``fit``
returns self, ``get_params(deep=True)``/``set_params`` validate names and values, ``clone`` copies
the parameters without the learned state. So ``sklearn.base.clone`` and ``GridSearchCV`` take a
featcache head as they take a scikit-learn classifier (``score`` is accuracy).

``fit(X, y, *, validation=None, context=None)``: X is (n, V, D), the V cached views of each
training image (view 0 un-augmented), or (n, D), one view (V = 1); ``validation`` is (X_val, y_val)
or None; ``context`` (a ``FitContext``) carries what a fit may use beyond the data (the number of
classes, a progress bar, a folder for its history and checkpoints), each head reading what it has
a use for. ``fit_inputs`` puts the four in that one shape for a head's ``fit``.

Grouped training (``featcache sweep``): heads of one type whose ``group_key()`` is equal (and not
None) may train together in one ``fit_group`` call that shares the pass over the features (the
Keras heads in one graph, logreg's C values in one stacked solve, knn's bank built once); the
default fits each alone.
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ParameterError, RegistryError
from ..registry import Registry
from .params import Param


@dataclass(frozen=True)
class FitContext:
    """What a fit may use beyond the data. A head reads what it has a use for and ignores the
    rest: the Keras heads read all of it, logreg writes its C path into ``workdir`` and
    ``tensorboard_dir``, knn reads only ``n_classes``, zeroshot ``classes`` and ``features``."""

    n_classes: int | None = None  # None: 1 + the largest label of y (and of y_val)
    progress: bool = False  # a progress bar on stderr, for heads whose fit takes a while
    workdir: Path | None = None  # the training history (history.csv) and checkpoints go here
    tensorboard_dir: Path | None = None  # TensorBoard event files
    checkpoint_every_epoch: bool = False  # Keras: also weights.{epoch}.weights.h5 in workdir
    callbacks: tuple = field(default=(), compare=False)  # Keras: extra keras.callbacks.Callback objects
    classes: tuple[str, ...] = ()  # the class names, in label order (zeroshot: what the text tower reads)
    # the FeatureConfig of each feature block of X, in concatenation order (zeroshot: which model
    # the image embedding came from, so its text tower can be rebuilt)
    features: tuple = field(default=(), compare=False)

    def __post_init__(self):
        for name in ("workdir", "tensorboard_dir"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        for name in ("callbacks", "classes", "features"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


def fit_inputs(X, y, validation=None, context: FitContext | None = None):
    """``fit``'s arguments in the shape every head works with: (X, y, X_val, y_val, context).

    A 2-D numpy X (n, D) is one view per image, (n, 1, D): what scikit-learn's model selection
    hands a head. A 3-D numpy X_val keeps view 0 (validation only ever sees the un-augmented
    image). Empty validation is no validation. ``context.n_classes`` is filled in from the labels
    when not given. Anything that is not a numpy array (a stream of store rows) passes as it is."""
    if not hasattr(X, "shape"):
        X = np.asarray(X)
    if isinstance(X, np.ndarray) and X.ndim == 2:
        X = X[:, None, :]
    y = np.asarray(y)
    X_val = y_val = None
    if validation is not None:
        X_val, y_val = validation
        y_val = np.asarray(y_val)
        if not len(y_val):
            X_val = y_val = None
        elif not hasattr(X_val, "shape"):
            X_val = np.asarray(X_val)
        if isinstance(X_val, np.ndarray) and X_val.ndim == 3:
            X_val = X_val[:, 0]
    context = context or FitContext()
    if context.n_classes is None and y.ndim == 2:  # multi-label: one 0/1 column per class
        context = replace(context, n_classes=int(y.shape[1]))
    elif context.n_classes is None and len(y):
        top = max(int(np.max(y)), int(np.max(y_val)) if y_val is not None else 0)
        context = replace(context, n_classes=1 + top)
    return X, y, X_val, y_val, context


class Head(ABC):
    name: ClassVar[str]
    parameters: ClassVar[tuple[Param, ...]] = ()
    files: ClassVar[tuple[str, ...]] = ()  # what save() writes into the run folder
    group_limit: ClassVar[int | None] = None  # at most this many heads in one fit_group call (None: any)
    # trains on multi-hot y ((n, classes) 0/1) and gives independent per-class probabilities
    multilabel_capable: ClassVar[bool] = False

    def __init__(self, **params: Any):
        for p in self.parameters:
            setattr(self, p.name, p.default)
        self.set_params(**params)

    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.parameters:
            if p.name == name:
                return p
        raise ParameterError(name, f"head {cls.name!r} has no parameter {name!r}; its parameters: "
                                   f"{', '.join(cls.param_names())}")

    @classmethod
    def param_names(cls) -> list[str]:
        return [p.name for p in cls.parameters]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters (scikit-learn's signature: the declared parameters are
        plain values, so ``deep`` adds nothing here; a head made of heads adds theirs as
        ``name__param``)."""
        return {p.name: getattr(self, p.name) for p in self.parameters}

    def set_params(self, **params: Any) -> Head:
        checked = {name: self.param(name).validate(value) for name, value in params.items()}
        for name, value in checked.items():  # all or nothing
            setattr(self, name, value)
        return self

    def params_record(self) -> dict[str, Any]:
        """The parameters as JSON values: what a run folder's config.json records and ``load``
        gets back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.get_params(deep=False).items()}

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in self.parameters}
        changed = {k: v for k, v in self.get_params(deep=False).items() if k not in defaults or v != defaults[k]}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def __sklearn_tags__(self):
        """scikit-learn's model selection asks for these (a classifier: stratified folds, ``score``)."""
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    @abstractmethod
    def fit(self, X, y, *, validation: tuple | None = None, context: FitContext | None = None) -> Head:
        """X: (n, V, D) cached views (view 0 un-augmented), or (n, D) rows (V = 1); y: int labels
        in [0, n_classes); ``validation``: (X_val, y_val), X_val (m, D) view-0 features, or None;
        ``context``: a FitContext (``fit_inputs`` fills in the defaults). Sets ``classes_`` (the
        label indices) and ``n_classes_``; returns self."""

    @abstractmethod
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, D) features -> (n, C) class probabilities."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write learned state into folder (no pickle)."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, params: dict) -> Head: ...

    @abstractmethod
    def to_keras(self):
        """A Keras model (D,) features -> (C,) probabilities giving the same numbers as predict_proba."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    def score(self, X, y) -> float:
        """Accuracy: scikit-learn's classifier score, what GridSearchCV ranks by. X: (m, D) rows,
        or (m, V, D) cached views, scored on view 0 as validation and test are."""
        if isinstance(X, np.ndarray | list) and np.ndim(X) == 3:
            X = np.asarray(X)[:, 0]
        return float(np.mean(self.predict(X) == np.asarray(y)))

    # -- grouped training (featcache sweep) ---------------------------------------------------------
    def group_key(self) -> Hashable | None:
        """Heads of this type with equal keys can be fitted by one ``fit_group`` call; None (the
        default): this head trains alone."""
        return None

    @classmethod
    def fit_group(cls, heads: Sequence[Head], X, y, *, validation: tuple | None = None,
                  contexts: Sequence[FitContext | None] | None = None) -> list[Head]:
        """Fit ``heads`` (unfitted, of this type, one ``group_key``, at most ``group_limit``) as each
        one's own ``fit(X, y, validation=..., context=its context)`` would, sharing what they can;
        return them fitted (the same objects, or heads that replace them). ``contexts``: one per
        head (each trial has its own workdir). The default fits each alone."""
        contexts = list(contexts) if contexts is not None else [None] * len(heads)
        return [h.fit(X, y, validation=validation, context=c) for h, c in zip(heads, contexts, strict=True)]

    def summary(self) -> dict:
        """What fit learned beyond the weights (epochs run, chosen C, ...), for metrics.json."""
        return {}

    def refit_params(self) -> dict[str, Any]:
        """After a fit with validation: the parameters that fix what validation chose (the best
        epoch, C), so a clone fitted on train + validation without validation follows the same
        choice. {} for a head whose fit chooses nothing on validation."""
        return {}

    def refitted(self, X: np.ndarray, y: np.ndarray, n_classes: int) -> Head:
        """A new head fitted on (X, y) without validation, with what validation chose here fixed."""
        return clone(self).set_params(**self.refit_params()).fit(X, y, context=FitContext(n_classes=n_classes))

    def _set_classes(self, n_classes: int) -> None:
        self.n_classes_ = int(n_classes)
        self.classes_ = np.arange(self.n_classes_)


def clone(head: Head) -> Head:
    """A new, unfitted head with the same parameters (what ``sklearn.base.clone`` does, without
    importing scikit-learn): heads among them are cloned, other values copied."""
    params = {k: clone(v) if isinstance(v, Head) else copy.deepcopy(v) for k, v in head.get_params(deep=False).items()}
    return type(head)(**params)


def check_fit_signature(cls: type[Head], where: str) -> None:
    """A head written for featcache 0.1 (fit(X_train, y_train, X_val, y_val, n_classes=, workdir=,
    ...)) would fail at its first fit with a TypeError: refuse it where it is registered, saying why."""
    params = inspect.signature(cls.fit).parameters
    if not {"validation", "context"} <= params.keys():
        raise RegistryError(f"head {cls.name!r} ({where}) has a featcache 0.1 fit(); featcache 0.2 calls "
                            "fit(X, y, *, validation=(X_val, y_val) or None, context=FitContext): update the head")


class HeadRegistry(Registry[type[Head]]):
    def on_plugin(self, item: type[Head], reference: str) -> type[Head]:
        check_fit_signature(item, f"entry point {reference}")
        return item


HEADS: HeadRegistry = HeadRegistry("head", "featcache.heads", lambda o: isinstance(o, type) and issubclass(o, Head))


def register_head(cls: type[Head], *, replace: bool = False) -> type[Head]:
    names = [p.name for p in cls.parameters]
    if len(set(names)) != len(names):
        raise ParameterError("parameters", f"head {cls.name!r} declares a parameter twice")
    check_fit_signature(cls, f"{cls.__module__}.{cls.__qualname__}")
    return HEADS.register(cls, replace=replace)


def get_head_class(name: str) -> type[Head]:
    return HEADS.get(name)


def make_head(name: str, params: dict | None = None, seed: int | None = None) -> Head:
    """A head of type ``name``; an unknown or bad parameter is a ParameterError naming it. ``seed``
    goes to the head's own ``seed`` parameter when it declares one."""
    cls = get_head_class(name)
    params = dict(params or {})
    if seed is not None and "seed" in cls.param_names():
        params.setdefault("seed", seed)
    return cls(**params)
