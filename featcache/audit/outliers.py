"""Outliers: images far from their nearest neighbours, whatever the class.

The score is the mean cosine distance to the k nearest other images: a blank, corrupt or off-topic
picture has no close neighbour, while a correctly filed but unusual photo still has a few. Raw
(uncentred) features: on ORL with a blank image and an ImageNet photo added, centring the features
dropped the blank image from rank 2 to rank 11-24 of 412 at 224 px (measured), because centring
removes the overall activation level that tells a blank image apart.

Flagged: a robust z-score (median and MAD, Iglewicz and Hoaglin) of at least ``z``; the ranking
itself covers every image, most distant first. Measured (benchmarks/bench_audit.py,
efficientnet_lite0 at 128 px): the blank image and the ImageNet photos planted in ORL score z 23-28,
the clean ORL photos at most 5.9 (2.5% of them reach 3.5), a clean Fashion-MNIST sample at most 2.3;
so 3.5 stays the default, and the audit reports the images ranked next below it.
"""

from __future__ import annotations

import numpy as np

from .knn import Neighbours

MAD_TO_SIGMA = 0.6745  # MAD of a normal distribution, in standard deviations


def knn_distance(neighbours: Neighbours, k: int) -> np.ndarray:
    """(n,) mean cosine distance of each row to its k nearest neighbours."""
    return 1.0 - neighbours.similarities[:, :k].astype(np.float64).mean(axis=1)


def robust_z(x: np.ndarray) -> np.ndarray:
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    if mad == 0:  # more than half the images tie: fall back to the mean absolute deviation
        mad = np.mean(np.abs(x - med)) or 1.0
    return MAD_TO_SIGMA * (x - med) / mad


def rank_outliers(scores: np.ndarray, z_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """-> (flagged rows ranked most distant first, robust z of every row)."""
    z = robust_z(scores)
    flagged = np.flatnonzero(z >= z_threshold)
    return flagged[np.lexsort((flagged, -scores[flagged]))], z


def next_below(scores: np.ndarray, flagged: np.ndarray, count: int, *, lowest_first: bool = False) -> np.ndarray:
    """The ``count`` rows that follow the flagged ones in the ranking by ``scores`` (highest first, or
    lowest first): what the threshold hid."""
    rest = np.setdiff1d(np.arange(len(scores)), flagged)
    key = scores[rest] if lowest_first else -scores[rest]
    return rest[np.lexsort((rest, key))][:count]
