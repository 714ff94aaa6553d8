"""Exact and near duplicates.

Exact: identical content digests (the manifest already has them). Near: a pair of images is a
candidate when one is among the other's ``duplicate_k`` nearest neighbours with a feature cosine
similarity of at least ``similarity``, and is confirmed when their 16x16 RGB thumbnails differ by at
most ``pixel_tolerance`` grey levels (RMS).

Why features alone do not decide (measured with efficientnet_lite0 on the 400 ORL faces, each
re-encoded as JPEG): distinct photos of one person reach a cosine similarity of 0.989, while a
re-encoding of a photo scores 0.83-0.98 at quality 85 and 0.76-0.94 at quality 50 (224 px; 160 px
alike): pooled features of small, upscaled images react to block artefacts as much as to a change
of pose, so no threshold separates the two. The copy is still near the top of each other's
neighbour lists (one way or the other: within 28 places at quality 85, within 50 for 98% of them
at quality 50), which makes features a good candidate filter. On the thumbnails the two are far
apart: re-encodings differ by at most 0.55 (quality 85), 0.93 (50) and 1.43 grey levels (30);
distinct ORL photos by at least 4.78, the ImageNet samples by more. 2.5 sits between, with a factor
of about 1.8 on each side. Only images with a candidate partner are decoded.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..extraction.reader import decode_threads
from ..progress import progress_bar
from .images import ImageFiles
from .knn import Neighbours
from .records import DuplicateGroup, ImageRef

FINGERPRINT_SIZE = 16
PAIR_BLOCK = 1 << 16  # pairs compared per numpy step


def candidate_pairs(neighbours: Neighbours, digests: list[str], similarity: float) -> tuple[np.ndarray, np.ndarray]:
    """-> ((m, 2) int64 pairs i < j of near images whose content differs, (m,) their similarity)."""
    _, content = np.unique(np.asarray(digests), return_inverse=True)
    rows, cols = np.nonzero(neighbours.similarities >= similarity)
    i, j = rows.astype(np.int64), neighbours.indices[rows, cols]
    keep = content[i] != content[j]
    pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)[keep]
    pairs, first = np.unique(pairs, axis=0, return_index=True)  # i->j and j->i are one pair
    return pairs, neighbours.similarities[rows, cols][keep][first]


def fingerprints(files: ImageFiles, indices: np.ndarray, progress: bool = False) -> dict[int, np.ndarray | None]:
    """Thumbnails of the given images, decoded on threads (Pillow releases the GIL while decoding)."""
    out: dict[int, np.ndarray | None] = {}
    with ThreadPoolExecutor(max_workers=decode_threads()) as pool, \
            progress_bar(len(indices), "near duplicates", enabled=progress) as bar:
        for i, fp in zip(indices.tolist(), pool.map(lambda i: files.fingerprint(i, FINGERPRINT_SIZE), indices.tolist()),
                         strict=True):
            out[i] = fp
            bar.update(1)
    return out


def confirm_pairs(pairs: np.ndarray, similarity: np.ndarray, files: ImageFiles, tolerance: float,
                  progress: bool = False) -> tuple[dict[tuple[int, int], tuple[float, float]], int]:
    """-> ({(i, j): (similarity, pixel difference)} of the confirmed pairs, number of pairs whose
    files could not be read)."""
    needed = np.unique(pairs)
    prints = fingerprints(files, needed, progress)
    readable = np.array([prints[i] is not None for i in needed.tolist()], bool)
    pos = np.searchsorted(needed, pairs)
    ok = readable[pos].all(axis=1)
    stack = np.stack([prints[i] if prints[i] is not None else np.zeros((FINGERPRINT_SIZE,) * 2 + (3,), np.float32)
                      for i in needed.tolist()]).reshape(len(needed), -1) if len(needed) else np.zeros((0, 1))
    confirmed = {}
    for start in range(0, len(pairs), PAIR_BLOCK):
        a, b = pos[start:start + PAIR_BLOCK].T
        diff = np.sqrt(np.mean((stack[a] - stack[b]) ** 2, axis=1))
        for n in np.flatnonzero((diff <= tolerance) & ok[start:start + PAIR_BLOCK]).tolist():
            i, j = pairs[start + n].tolist()
            confirmed[(i, j)] = (float(similarity[start + n]), float(diff[n]))
    return confirmed, int((~ok).sum())


def group_duplicates(refs: list[ImageRef], digests: list[str],
                     near: dict[tuple[int, int], tuple[float, float]]) -> list[DuplicateGroup]:
    """Exact copies and confirmed near pairs joined into groups (connected components); groups
    that leak across splits or mix labels first, then the most similar."""
    parent = list(range(len(refs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    edges: dict[tuple[int, int], tuple[float, float]] = dict(near)
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(digests):
        by_digest[d].append(i)
    for same in by_digest.values():
        edges.update({(same[0], j): (1.0, 0.0) for j in same[1:]})
    for i, j in edges:
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = defaultdict(list)
    for i in sorted({i for pair in edges for i in pair}):
        members[root(i)].append(i)
    stats: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for (i, _), edge in edges.items():
        stats[root(i)].append(edge)
    groups = [DuplicateGroup("exact" if len({digests[i] for i in idx}) == 1 else "near",
                             tuple(refs[i] for i in idx), min(s for s, _ in stats[r]), max(p for _, p in stats[r]))
              for r, idx in members.items()]
    return sorted(groups, key=lambda g: (not g.problem, -g.similarity, g.images[0].index))
