"""Find what is wrong with a data set from its cached features: likely label errors (out-of-fold
probabilities), exact and near duplicates (leaking across splits or carrying different labels),
outliers (far from every neighbour), and the stored images nearest to query images.

``audit(store, backbone)`` and ``neighbors(store, backbone, images)`` are the entry points; the
``featcache audit`` and ``featcache neighbors`` commands print what they return.
"""

from __future__ import annotations

from .knn import Neighbours, search, unit_rows
from .neighbors import neighbors
from .options import AuditOptions
from .pipeline import audit
from .records import (
    AuditResult,
    DuplicateGroup,
    ImageRef,
    LabelIssue,
    Neighbor,
    NeighborsResult,
    Outlier,
    QueryNeighbors,
)

__all__ = [
    "AuditOptions", "AuditResult", "DuplicateGroup", "ImageRef", "LabelIssue", "Neighbor", "Neighbours",
    "NeighborsResult", "Outlier", "QueryNeighbors", "audit", "neighbors", "search", "unit_rows",
]
