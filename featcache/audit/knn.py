"""Exact cosine k-nearest-neighbour search over feature rows, in tiles.

The full similarity matrix is never held: queries are taken in blocks and the rows in chunks, and
only each query's running top k is kept, so memory is the unit-normalised rows (1M x 1280 float32
is 5 GB) plus one block x chunk tile (``TILE_BYTES``), whatever the number of rows. Timings
against an approximate index are in benchmarks/bench_neighbors.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

TILE_BYTES = 64 << 20  # one (queries x rows) float32 similarity tile: large enough for BLAS to run at speed
CHUNK_ROWS = 16384


@dataclass(frozen=True)
class Neighbours:
    indices: np.ndarray  # (q, k) int64 row numbers, most similar first (ties: lower row first)
    similarities: np.ndarray  # (q, k) float32 cosine similarities

    @property
    def k(self) -> int:
        return self.indices.shape[1]


def unit_rows(X: np.ndarray) -> np.ndarray:
    """(n, D) -> float32 rows of norm 1; an all-zero row stays zero (similarity 0 to everything)."""
    U = np.array(X, np.float32, copy=True).reshape(len(X), -1)
    norms = np.linalg.norm(U, axis=1, keepdims=True)
    np.divide(U, norms, out=U, where=norms > 0)
    return U


def search(rows: np.ndarray, queries: np.ndarray | None, k: int, *, tile_bytes: int = TILE_BYTES) -> Neighbours:
    """The k rows most similar to each query (all arrays unit-normalised, see unit_rows).

    ``queries=None`` searches every row against the others, leaving each row out of its own list.
    """
    if k < 1:
        raise ParameterError("k", f"must be at least 1, got {k}")
    self_search = queries is None
    queries = rows if self_search else queries
    k = min(k, len(rows) - self_search)
    if k < 1 or not len(queries):
        return Neighbours(np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32))
    chunk = min(len(rows), CHUNK_ROWS)
    block = max(1, min(len(queries), tile_bytes // (4 * chunk)))
    out_i = np.empty((len(queries), k), np.int64)
    out_s = np.empty((len(queries), k), np.float32)
    for qs in range(0, len(queries), block):
        Q = queries[qs:qs + block]
        best_s = np.full((len(Q), 0), -np.inf, np.float32)
        best_i = np.zeros((len(Q), 0), np.int64)
        for rs in range(0, len(rows), chunk):
            S = Q @ rows[rs:rs + chunk].T
            if self_search:
                _mask_self(S, qs, rs)
            # Reduce the tile to its own top k before merging: the merge then copies 2k columns, not the tile.
            kk = min(k, S.shape[1])
            top = np.argpartition(-S, kk - 1, axis=1)[:, :kk] if kk < S.shape[1] else np.broadcast_to(
                np.arange(S.shape[1]), S.shape)
            cand_s = np.concatenate([best_s, np.take_along_axis(S, top, axis=1)], axis=1)
            cand_i = np.concatenate([best_i, top + rs], axis=1)
            if cand_s.shape[1] > k:
                keep = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
                cand_s, cand_i = np.take_along_axis(cand_s, keep, axis=1), np.take_along_axis(cand_i, keep, axis=1)
            best_s, best_i = cand_s, cand_i
        order = np.lexsort((best_i, -best_s), axis=1)  # deterministic: similarity, then row number
        out_s[qs:qs + len(Q)] = np.take_along_axis(best_s, order, axis=1)
        out_i[qs:qs + len(Q)] = np.take_along_axis(best_i, order, axis=1)
    return Neighbours(out_i, out_s)


def _mask_self(S: np.ndarray, qs: int, rs: int) -> None:
    """Blank the entries of the tile where a row meets itself (query qs + i is row qs + i)."""
    lo, hi = max(qs, rs), min(qs + S.shape[0], rs + S.shape[1])
    if lo < hi:
        r = np.arange(lo, hi)
        S[r - qs, r - rs] = -np.inf
