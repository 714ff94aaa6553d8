"""AuditOptions: what `audit` is asked to do, validated once."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ParameterError
from ..ingest.label_file import group_pattern

SCORES = ("self_confidence", "margin")
MAPS = ("pca", "tsne")


@dataclass(frozen=True)
class AuditOptions:
    # label errors: out-of-fold probabilities of a logistic regression on standardized features
    folds: int = 5
    C: float = 1.0  # ORL's validation-chosen C is 1-3 (benchmarks/bench_heads.py); out-of-fold ranking barely moves
    score: str = "self_confidence"  # or "margin": p(given) - max p(other)
    # outliers: mean cosine distance to the k nearest neighbours
    k: int = 10
    outlier_z: float = 3.5  # robust z-score (Iglewicz-Hoaglin's 3.5) of that distance to flag
    # near duplicates: feature candidates, confirmed on pixels (see duplicates.py for the calibration)
    duplicate_k: int = 50
    duplicate_similarity: float = 0.75
    pixel_tolerance: float = 2.5  # RMS difference of 16x16 RGB thumbnails, grey levels (0-255)
    # pictures
    map: str = "pca"
    sheet_size: int = 48  # thumbnails per contact sheet
    image_root: str | None = None  # where the images are, when not at the store's recorded data folder
    # group leaks: the store's groups, or groups by a regular expression on the paths (a store without)
    group_by: str | None = None
    seed: int = 0

    def __post_init__(self):
        group_pattern(self.group_by)  # a bad expression is refused before anything is read
        for name, low in (("folds", 2), ("k", 1), ("duplicate_k", 1), ("sheet_size", 1)):
            if getattr(self, name) < low:
                raise ParameterError(name, f"must be at least {low}, got {getattr(self, name)}")
        for name in ("C", "outlier_z", "pixel_tolerance"):
            if not getattr(self, name) > 0:
                raise ParameterError(name, f"must be positive, got {getattr(self, name)}")
        if not -1 <= self.duplicate_similarity <= 1:
            raise ParameterError("duplicate_similarity", f"is a cosine similarity, from -1 to 1; got "
                                                         f"{self.duplicate_similarity}")
        if self.score not in SCORES:
            raise ParameterError("score", f"unknown score {self.score!r}; choose {' or '.join(SCORES)}")
        if self.map not in MAPS:
            raise ParameterError("map", f"unknown map {self.map!r}; choose {' or '.join(MAPS)}")

    def to_dict(self) -> dict:
        return asdict(self)
