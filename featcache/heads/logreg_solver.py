"""Multinomial logistic regression for many C at once, over rows held in memory or streamed in blocks.

The objective is scikit-learn's (lbfgs): mean log-loss + ||W||^2 / (2 C n), intercept unpenalized;
two classes use one logit (sigmoid), as scikit-learn does. The C values are solved in waves of
``WAVE``, in increasing order: the C of one wave are the problems of one stacked L-BFGS (lbfgs.py),
a pass over the rows evaluating all of them with one matrix product against their stacked
weights. Each C starts from zero, as a fit of that C alone does, so every point of the path is
what fitting its C gives; with ``warm_start`` each wave starts from the previous wave's solution
for its largest C instead (cheaper, but on a flat objective the warm start already meets the
stopping test, so the point stays near the previous C's optimum).

Warm starts on large data: the problems are first solved on every 16th, then every 4th block
(the same penalty: the same problem on fewer rows), each stage starting the next; the last runs on
every row to the full tolerance. A stage is used only with enough rows per feature to be close.

``blocks(every=1)`` yields (X, y) blocks: standardized float32 rows and their int labels. A block source
that reads a store chunk by chunk makes this a streaming solver: memory is one block, not the rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .lbfgs import minimize_stacked

Blocks = Callable[..., Iterator[tuple[np.ndarray, np.ndarray]]]  # blocks(every=1): every k-th block only
COARSE = (16, 4)  # warm starts: solve on every 16th block, then every 4th, then all of them
WAVE = 4  # C values solved together; each wave starts from the previous wave's largest C (warm start)
COARSE_ROWS_PER_DIM = 16  # a coarse stage needs this many rows per feature, else it solves another problem


@dataclass
class Moments:
    """Row count, mean and per-feature spread of the training rows, merged block by block (Chan et al.)."""

    n: int
    mean: np.ndarray  # (D,) float64
    sq: np.ndarray  # (D,) float64: sum of squared deviations from the mean

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.sq / max(self.n, 1))


def moments(blocks: Blocks) -> Moments:
    """One pass, float64; each block centred on its own mean first, so float32 rows lose nothing."""
    n, mean, sq = 0, None, None
    for X, _ in blocks():
        r = len(X)
        if not r:
            continue
        m = X.mean(axis=0, dtype=np.float64)
        dev = X - m.astype(X.dtype)
        s = np.einsum("ij,ij->j", dev, dev, dtype=np.float64)
        if mean is None:
            n, mean, sq = r, m, s
            continue
        delta = m - mean
        total = n + r
        sq = sq + s + delta ** 2 * n * r / total
        mean = mean + delta * r / total
        n = total
    if mean is None:
        raise ValueError("no training rows")
    return Moments(n, mean, sq)


@dataclass
class PathResult:
    Cs: list[float]
    coef: np.ndarray  # (G, K', D) on standardized rows; K' = 1 for two classes
    intercept: np.ndarray  # (G, K')
    n_iter: np.ndarray  # (G,)
    converged: np.ndarray  # (G,)
    passes: float  # passes over the rows (a pass over every 4th block counts a quarter)
    seconds: float


def solve_path(blocks: Blocks, n_rows: int, n_blocks: int, dim: int, n_classes: int, Cs: list[float],
               tol: float, max_iter: int, wave: int = WAVE, warm_start: bool = False) -> PathResult:
    """Fit every C in ``Cs`` on the same rows (``n_rows`` of ``dim`` features in ``n_blocks`` blocks)."""
    start = time.perf_counter()
    k = 1 if n_classes == 2 else n_classes
    Cs = [float(c) for c in Cs]
    lam = 1.0 / (np.asarray(Cs) * n_rows)  # scikit-learn's penalty on the mean loss
    coarse = [e for e in COARSE if e * 2 <= n_blocks and n_rows / e >= COARSE_ROWS_PER_DIM * dim]
    x = np.zeros((len(Cs), dim * k + k))
    n_iter, converged = np.zeros(len(Cs), int), np.zeros(len(Cs), bool)
    passes, warm = 0.0, None
    order = np.argsort(Cs, kind="stable")
    for w in range(0, len(order), wave):
        group = order[w:w + wave]
        xg = np.zeros((len(group), x.shape[1])) if warm is None else np.repeat(warm[None], len(group), axis=0)
        for every in (*(coarse if warm is None else ()), 1):  # a warm wave starts close already
            loss = _Objective(lambda every=every: blocks(every=every), n_classes, k, lam[group], dim)
            res = minimize_stacked(loss, xg, tol, max_iter)
            xg = res.x
            passes += res.evaluations / every
        x[group], n_iter[group], converged[group] = xg, res.n_iter, res.converged
        if warm_start:
            warm = xg[-1]  # the wave's largest C starts the next wave
    W, b = loss.unpack(x)
    return PathResult(Cs, W.transpose(0, 2, 1), b, n_iter, converged, passes, time.perf_counter() - start)


class _Objective:
    """f, its gradient and scikit-learn's stopping measure for the active problems: one pass."""

    def __init__(self, blocks: Blocks, n_classes: int, k: int, lam: np.ndarray, dim: int):
        self.blocks, self.n_classes, self.k, self.lam, self.dim = blocks, n_classes, k, lam, dim

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(A, D, K') weights on standardized rows and (A, K') intercepts."""
        D, k = self.dim, self.k
        return x[:, :D * k].reshape(len(x), D, k), x[:, D * k:]

    def __call__(self, x: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        W, b = self.unpack(x)
        A, D, k = len(active), self.dim, self.k
        Wcat = np.ascontiguousarray(W.transpose(1, 0, 2).reshape(D, A * k), np.float32)
        f = np.zeros(A)
        gW = np.zeros((D, A * k))
        gb = np.zeros((A, k))
        seen = 0
        for X, y in self.blocks():
            seen += len(X)
            Z = (X @ Wcat).reshape(len(X), A, k) + b[None].astype(np.float32)
            R, loss = _residual(Z, y, self.n_classes)
            f += loss
            gW += X.T @ R.reshape(len(X), A * k)
            gb += R.sum(axis=0, dtype=np.float64)
        gW = gW.reshape(D, A, k).transpose(1, 0, 2) / seen + self.lam[active, None, None] * W
        f = f / seen + 0.5 * self.lam[active] * np.einsum("adk,adk->a", W, W)
        gb /= seen
        norm = np.maximum(np.abs(gW).max(axis=(1, 2)), np.abs(gb).max(axis=1))  # scikit-learn's gtol measure
        return f, np.concatenate([gW.reshape(A, D * k), gb], axis=1), norm


def _residual(Z: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities - targets) (r, A, K') in float32 and the summed log-loss per problem (A,):
    float32 is the products' precision anyway, and the sums are taken in float64."""
    rows = np.arange(len(y))
    if n_classes == 2:  # one logit: loss = softplus(z) - y z
        z = Z[:, :, 0]
        t = (y == 1).astype(z.dtype)[:, None]
        loss = (np.logaddexp(0.0, z) - t * z).sum(axis=0, dtype=np.float64)
        return (1.0 / (1.0 + np.exp(-z)) - t)[:, :, None], loss
    Z = Z - Z.max(axis=2, keepdims=True)
    lse = np.log(np.exp(Z).sum(axis=2, keepdims=True))
    logp = Z - lse
    P = np.exp(logp)
    loss = -logp[rows, :, y].sum(axis=0, dtype=np.float64)
    P[rows, :, y] -= 1.0
    return P, loss
