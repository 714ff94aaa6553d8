"""The typed records an audit and a neighbour search hand back, and their JSON form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..ingest.splits import SPLITS


@dataclass(frozen=True)
class ImageRef:
    """One image of the audited FeatureSet: its row there, path (relative to the data folder), class
    and split names."""

    index: int
    path: str
    label: str
    split: str
    group: str | None = None  # the image's group (patient, site, ...) where the store has groups


@dataclass(frozen=True)
class LabelIssue:
    """An image whose out-of-fold prediction disagrees with its folder's class."""

    image: ImageRef
    suggested: str  # the most probable class other than the given one
    given_probability: float
    suggested_probability: float
    score: float  # self-confidence or normalized margin: the lower, the more suspicious

    def to_dict(self) -> dict:
        return {**asdict(self.image), "suggested": self.suggested, "given_probability": self.given_probability,
                "suggested_probability": self.suggested_probability, "score": self.score}


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are the same picture: identical files ("exact"), or near-identical ones ("near":
    close features, confirmed on their pixels)."""

    kind: str  # "exact" | "near"
    images: tuple[ImageRef, ...]
    similarity: float  # lowest feature cosine similarity of the pairs that joined the group
    pixel_difference: float  # largest RMS difference of their thumbnails, in grey levels (0 for exact)

    @property
    def leak(self) -> bool:
        """The same picture in more than one split: a test score measured on training images."""
        return len({im.split for im in self.images}) > 1

    @property
    def label_conflict(self) -> bool:
        return len({im.label for im in self.images}) > 1

    @property
    def problem(self) -> bool:
        return self.leak or self.label_conflict

    def to_dict(self) -> dict:
        return {"kind": self.kind, "leak": self.leak, "label_conflict": self.label_conflict,
                "similarity": self.similarity, "pixel_difference": self.pixel_difference,
                "images": [asdict(im) for im in self.images]}


@dataclass(frozen=True)
class GroupLeak:
    """A group (patient, site, camera) with images in more than one split: its test images are not
    independent of its training images, so the test score leaks."""

    group: str
    splits: dict[str, int]  # split -> images of the group there
    images: tuple[ImageRef, ...]

    def to_dict(self) -> dict:
        return {"group": self.group, "splits": self.splits, "images": [asdict(im) for im in self.images]}


def group_leaks(refs: list[ImageRef]) -> list[GroupLeak]:
    """Groups found in several splits, the largest first."""
    members: dict[str, list[ImageRef]] = {}
    for ref in refs:
        if ref.group is not None:
            members.setdefault(ref.group, []).append(ref)
    leaks = []
    for group, images in members.items():
        splits = {s: n for s in SPLITS if (n := sum(im.split == s for im in images))}
        if len(splits) > 1:
            leaks.append(GroupLeak(group, splits, tuple(images)))
    return sorted(leaks, key=lambda g: (-len(g.images), g.group))


@dataclass(frozen=True)
class Outlier:
    """An image far from its nearest neighbours, whatever their class."""

    image: ImageRef
    score: float  # mean cosine distance to the k nearest neighbours
    z: float  # robust z-score of that distance among all images

    def to_dict(self) -> dict:
        return {**asdict(self.image), "score": self.score, "z": self.z}


@dataclass
class AuditResult:
    """Every finding of one audit, each list ranked most suspicious first."""

    store: str
    key: str
    classes: list[str]
    n_images: int
    label_issues: list[LabelIssue]
    duplicates: list[DuplicateGroup]
    outliers: list[Outlier]
    out_of_fold_accuracy: float
    unverified_pairs: int  # near-duplicate candidates whose files could not be read to confirm them
    options: dict
    group_leaks: list[GroupLeak] = field(default_factory=list)  # groups in several splits
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # what was written under ``out``

    def to_dict(self) -> dict:
        return {"store": self.store, "key": self.key, "classes": self.classes, "n_images": self.n_images,
                "out_of_fold_accuracy": self.out_of_fold_accuracy, "unverified_pairs": self.unverified_pairs,
                "options": self.options, "seconds": self.seconds, "files": self.files,
                "label_issues": [x.to_dict() for x in self.label_issues],
                "duplicates": [x.to_dict() for x in self.duplicates],
                "outliers": [x.to_dict() for x in self.outliers],
                "group_leaks": [x.to_dict() for x in self.group_leaks]}


@dataclass(frozen=True)
class Neighbor:
    image: ImageRef
    similarity: float  # cosine similarity of view-0 features

    def to_dict(self) -> dict:
        return {**asdict(self.image), "similarity": self.similarity}


@dataclass(frozen=True)
class QueryNeighbors:
    """The most similar stored images of one query file (none, and ``error``, if it is unreadable)."""

    path: str
    neighbors: tuple[Neighbor, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.error, "neighbors": [n.to_dict() for n in self.neighbors]}


@dataclass
class NeighborsResult:
    store: str
    key: str
    rows: int  # stored images searched
    queries: list[QueryNeighbors]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"store": self.store, "key": self.key, "rows": self.rows, "seconds": self.seconds,
                "queries": [q.to_dict() for q in self.queries]}
