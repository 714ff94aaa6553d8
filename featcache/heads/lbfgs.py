"""L-BFGS over a stack of independent problems: one call minimizes G objectives at once.

Why not G calls of scipy's L-BFGS: each evaluation of a logistic-regression objective is a pass
over the data (a matrix product with the rows), and G problems evaluated together share that pass
(one wider product). Each problem keeps its own curvature history, line search and stopping test,
so the result is what G separate runs would give; a problem that has converged drops out of the
evaluations.

``fun(x, active) -> (f, g, norm)``: ``x`` (A, P) parameters of the ``active`` problems (indices
into the stack), ``f`` (A,) objective values, ``g`` (A, P) gradients, ``norm`` (A,) the largest
gradient entry in the coordinates the stopping tolerance ``tol`` is meant for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FTOL = 64 * np.finfo(float).eps  # scipy's factr as scikit-learn sets it: a relative decrease this small ends a run
C1 = 1e-4  # Armijo's sufficient decrease


@dataclass
class StackedResult:
    x: np.ndarray  # (G, P)
    f: np.ndarray  # (G,)
    n_iter: np.ndarray  # (G,) iterations each problem ran
    converged: np.ndarray  # (G,) bool: gradient or relative-decrease test met before max_iter
    evaluations: int  # data passes (each evaluates the problems still running)


def minimize_stacked(fun: Callable, x0: np.ndarray, tol: float, max_iter: int, memory: int = 10,
                     max_backtracks: int = 30) -> StackedResult:
    x = np.array(x0, np.float64)
    G, P = x.shape
    S = np.zeros((G, memory, P))
    Y = np.zeros((G, memory, P))
    rho = np.zeros((G, memory))
    stored = np.zeros(G, int)  # curvature pairs held (ring buffer, newest at (stored - 1) % memory)
    n_iter = np.zeros(G, int)
    converged = np.zeros(G, bool)
    everyone = np.arange(G)
    f, g, norm = fun(x, everyone)
    evaluations = 1
    done = norm <= tol
    converged |= done
    while True:
        active = np.flatnonzero(~done & (n_iter < max_iter))
        if not len(active):
            break
        d = -_two_loop(g[active], S[active], Y[active], rho[active], stored[active])
        slope = np.einsum("ap,ap->a", g[active], d)
        uphill = slope >= 0  # a history gone bad: restart it with steepest descent
        if uphill.any():
            d[uphill] = -g[active][uphill]
            slope[uphill] = -np.einsum("ap,ap->a", g[active][uphill], g[active][uphill])
            stored[active[uphill]] = 0
        # first step of a fresh history: unit length in the gradient's direction (as scipy's)
        step = np.where(stored[active] == 0, 1.0 / np.maximum(np.linalg.norm(d, axis=1), 1e-12), 1.0)
        f_new, g_new, x_new, n_new = f[active].copy(), g[active].copy(), x[active].copy(), norm[active].copy()
        pending = np.arange(len(active))
        for _ in range(max_backtracks):
            trial = x[active[pending]] + step[pending, None] * d[pending]
            ft, gt, nt = fun(trial, active[pending])
            evaluations += 1
            ok = np.isfinite(ft) & (ft <= f[active[pending]] + C1 * step[pending] * slope[pending])
            took = pending[ok]
            f_new[took], g_new[took], x_new[took], n_new[took] = ft[ok], gt[ok], trial[ok], nt[ok]
            pending = pending[~ok]
            if not len(pending):
                break
            step[pending] *= 0.5  # backtrack
        # a problem whose line search found no decrease is as good as it gets at this precision
        stuck = active[pending]
        done[stuck] = True
        converged[stuck] = True
        moved = np.setdiff1d(np.arange(len(active)), pending)
        idx = active[moved]
        s = x_new[moved] - x[idx]
        y = g_new[moved] - g[idx]
        sy = np.einsum("ap,ap->a", s, y)
        keep = sy > 1e-10 * np.einsum("ap,ap->a", y, y)  # curvature condition: else skip the pair
        slot = stored[idx] % memory
        for j in np.flatnonzero(keep):
            p = idx[j]
            S[p, slot[j]], Y[p, slot[j]], rho[p, slot[j]] = s[j], y[j], 1.0 / sy[j]
            stored[p] += 1
        decrease = (f[idx] - f_new[moved]) / np.maximum(np.maximum(np.abs(f[idx]), np.abs(f_new[moved])), 1.0)
        x[idx], f[idx], g[idx], norm[idx] = x_new[moved], f_new[moved], g_new[moved], n_new[moved]
        n_iter[active] += 1
        small = (norm[idx] <= tol) | (decrease <= FTOL)
        done[idx[small]] = True
        converged[idx[small]] = True
    return StackedResult(x, f, n_iter, converged, evaluations)


def _two_loop(g: np.ndarray, S: np.ndarray, Y: np.ndarray, rho: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """H g for each problem, H the L-BFGS inverse-Hessian estimate from its stored pairs."""
    A, memory, _ = S.shape
    q = g.copy()
    alpha = np.zeros((A, memory))
    rows = np.arange(A)
    held = np.minimum(stored, memory)
    for back in range(memory):  # newest pair first
        use = back < held
        k = (stored - 1 - back) % memory
        a = rho[rows, k] * np.einsum("ap,ap->a", S[rows, k], q) * use
        alpha[:, back] = a
        q -= a[:, None] * Y[rows, k]
    newest = (stored - 1) % memory
    yy = np.einsum("ap,ap->a", Y[rows, newest], Y[rows, newest])
    gamma = np.where(held > 0, 1.0 / np.maximum(rho[rows, newest] * yy, 1e-300), 1.0)
    r = gamma[:, None] * q
    for back in reversed(range(memory)):
        use = back < held
        k = (stored - 1 - back) % memory
        b = rho[rows, k] * np.einsum("ap,ap->a", Y[rows, k], r) * use
        r += (alpha[:, back] - b)[:, None] * S[rows, k]
    return r
