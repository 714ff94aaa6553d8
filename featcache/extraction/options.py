"""ExtractOptions: what `extract` is asked to do, validated once, turned into FeatureConfig records."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backbones import DEFAULT_BACKBONE
from ..backbones.devices import resolve_device, resolve_precision
from ..backbones.model import resolve_config, tap_configs
from ..config import Compute, FeatureConfig
from ..errors import ParameterError
from ..ingest.augment import AugmentParams, check_augmented_views
from ..ingest.label_file import LabelSource
from ..ingest.scan import SplitFractions

MAX_BATCH_SIZE = 4096


@dataclass(frozen=True)
class ExtractOptions:
    backbones: tuple[str, ...] = (DEFAULT_BACKBONE,)
    augment: AugmentParams = field(default_factory=AugmentParams)
    split: SplitFractions | str | None = None  # None: the store's split (70/20/10 for a new store)
    resplit: bool = False  # allow a split other than the store's: images move between train/validation/test
    image_size: int | None = None  # None: each backbone's own input size
    pooling: str = "avg"
    weights: str = "imagenet"  # "imagenet", "random" (tests) or a local weights file (one backbone)
    dtype: str = "float16"
    batch_size: int | str = 32  # or "auto": the largest that fits the device (a CPU: 32), recorded
    workers: int | None = None  # decoding threads; None: up to 4
    chunk_rows: int | None = None  # rows per store chunk (= per work unit); None: about 2 MB of features
    strict: bool = False  # stop at the first unreadable image instead of skipping it
    progress: bool = True
    precision: str = "float32"  # a Keras dtype policy, or "mixed": mixed_float16 (bfloat16 only by name)
    jit: bool = False  # XLA-compile the forward pass
    jpeg_draft: bool = False  # decode large JPEGs at reduced scale: faster, other pixels (recorded)
    device: str | None = None  # "cpu", "gpu", "gpu:N"; None: the first GPU if there is one
    # Blocks of every backbone whose pooled output is extracted too, each as its own feature config
    # (BackboneConfig.tap), besides the final output; "block4,block6" or a sequence of names.
    taps: tuple[str, ...] | str = ()
    labels: LabelSource | None = None  # a label table instead of the class folders (ingest/label_file.py)
    group_by: str | None = None  # a regular expression on the relative paths: a group per match, one split each

    def __post_init__(self):
        if isinstance(self.backbones, str):  # one name, not a sequence of one-letter names
            object.__setattr__(self, "backbones", (self.backbones,))
        object.__setattr__(self, "backbones", tuple(self.backbones))
        taps = self.taps.split(",") if isinstance(self.taps, str) else self.taps
        object.__setattr__(self, "taps", tuple(dict.fromkeys(t.strip() for t in taps if t.strip())))
        if not self.backbones:
            raise ParameterError("backbones", "give at least one backbone")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= MAX_BATCH_SIZE):
            raise ParameterError("batch_size", f"must be from 1 to {MAX_BATCH_SIZE}, or auto, got {self.batch_size}")
        for name in ("workers", "chunk_rows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ParameterError(name, f"must be at least 1, got {getattr(self, name)}")
        check_augmented_views(self.augment.augmented_views)  # bounded work (augment.py says why)
        if self.labels is not None and not isinstance(self.labels, LabelSource):
            object.__setattr__(self, "labels", LabelSource(self.labels))  # a path alone: the usual columns
        if self.weights not in ("imagenet", "random") and len(self.backbones) > 1:
            raise ParameterError("weights", "a weights file applies to a single backbone; extract one at a time")

    def resolved_device(self) -> str | None:
        """The TensorFlow device name of ``device`` (None: TensorFlow's choice, a GPU if any)."""
        return resolve_device(self.device)

    def feature_configs(self) -> list[FeatureConfig]:
        compute = Compute(resolve_precision(self.precision), self.jit, self.jpeg_draft)
        backbones = []
        for name in self.backbones:
            final = resolve_config(name, self.image_size, self.pooling, self.weights)
            backbones += [final, *tap_configs(final, self.taps)]
        return [FeatureConfig(b, self.augment, self.dtype, compute) for b in backbones]
