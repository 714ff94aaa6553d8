"""ExtractOptions: what `extract` is asked to do, validated once, turned into FeatureConfig records."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backbones import DEFAULT_BACKBONE
from ..backbones.model import resolve_config
from ..config import FeatureConfig
from ..errors import ParameterError
from ..ingest.augment import AugmentParams
from ..ingest.scan import SplitFractions

MAX_BATCH_SIZE = 4096


@dataclass(frozen=True)
class ExtractOptions:
    backbones: tuple[str, ...] = (DEFAULT_BACKBONE,)
    augment: AugmentParams = field(default_factory=AugmentParams)
    split: SplitFractions | str | None = None  # None: the store's split (70/20/10 for a new store)
    image_size: int | None = None  # None: each backbone's own input size
    pooling: str = "avg"
    weights: str = "imagenet"  # "imagenet", "random" (tests) or a local weights file (one backbone)
    dtype: str = "float16"
    batch_size: int = 32
    workers: int | None = None  # decoding threads; None: up to 4
    chunk_rows: int | None = None  # rows per store chunk (= per work unit); None: about 2 MB of features
    strict: bool = False  # stop at the first unreadable image instead of skipping it
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.backbones, str):  # one name, not a sequence of one-letter names
            object.__setattr__(self, "backbones", (self.backbones,))
        object.__setattr__(self, "backbones", tuple(self.backbones))
        if not self.backbones:
            raise ParameterError("backbones", "give at least one backbone")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ParameterError("batch_size", f"must be from 1 to {MAX_BATCH_SIZE}, got {self.batch_size}")
        for name in ("workers", "chunk_rows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ParameterError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.weights not in ("imagenet", "random") and len(self.backbones) > 1:
            raise ParameterError("weights", "a weights file applies to a single backbone; extract one at a time")

    def feature_configs(self) -> list[FeatureConfig]:
        return [FeatureConfig(resolve_config(b, self.image_size, self.pooling, self.weights), self.augment, self.dtype)
                for b in self.backbones]
