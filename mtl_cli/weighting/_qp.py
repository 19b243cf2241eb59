"""Small dense problems on [T, T] Gramians, solved on the host in float64 with numpy.

The problems the gradient methods solve are tiny ([T, T] with T tasks) and latency-bound: in torch
every small op pays for dispatch and, with several intra-op threads, for waking them, and on a GPU
for a kernel launch and a synchronisation per data-dependent branch. Here the Gramian is copied to
the host once (:func:`host`), solved in float64 with numpy (microseconds per operation, no threads
for matrices this small), and the [T] weights go back to the Gramian's device and dtype
(:func:`to_torch`). Float64 throughout, whatever the Gramian's dtype: the solvers are exact up to
float64 round-off on the matrix they are given.

- :func:`nonneg_qp`: a batch of ``min_x 1/2 x^T K x + q_b^T x  s.t.  x >= 0`` sharing one K, by the
  Lawson-Hanson active-set method written on K (the normal-equations form of NNLS), all problems
  at once; each iteration solves only the free variables' block (the batch padded to the largest
  free set, not to T), so a problem costs O(k^3) per iteration for k free variables;
- :func:`min_norm_point`: the point of minimum norm of the convex hull of vectors known only by
  their Gramian (Wolfe's algorithm, 1976: exact active-set, affinely independent corrals);
- :func:`dual_cone_weights`: the projections onto the dual cone of UPGrad and DualProj.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

EPS64 = float(np.finfo(np.float64).eps)

#: (tensor, its float64 host copy) of the enclosing :func:`fetched` blocks
_FETCHED: list[tuple[Tensor, np.ndarray]] = []


def host(M: Tensor) -> np.ndarray:
    """A float64 host copy of ``M`` (one device transfer, none inside a :func:`fetched` block that
    holds ``M``; never a view of M's memory)."""
    for t, a in reversed(_FETCHED):
        if t is M:
            return a.copy()
    return np.array(M.detach().to(device="cpu", dtype=torch.float64).numpy(), dtype=np.float64, copy=True)


@contextlib.contextmanager
def fetched(*tensors: Tensor) -> Iterator[None]:
    """Copy ``tensors`` to the host together, in one device transfer (one synchronisation on an
    accelerator), so that :func:`host` of any of them inside the block reads that copy. The values
    are those :func:`host` would give (each tensor cast to float64 first; float32 on MPS, which has
    no float64, then widened on the host: exact)."""
    tensors = tuple(t for t in tensors if not any(t is f for f, _ in _FETCHED))  # (not twice)
    ts = [t.detach() for t in tensors]
    arrays: list[np.ndarray] = []
    if ts:
        wide = torch.float32 if ts[0].device.type == "mps" else torch.float64
        flat = torch.cat([t.reshape(-1).to(wide) for t in ts]).cpu().numpy().astype(np.float64)
        sizes = np.cumsum([t.numel() for t in ts])[:-1]
        arrays = [a.reshape(t.shape) for a, t in zip(np.split(flat, sizes), ts)]
    entries = list(zip(tensors, arrays))
    _FETCHED.extend(entries)
    try:
        yield
    finally:
        del _FETCHED[len(_FETCHED) - len(entries) :]


def to_torch(x: np.ndarray, like: Tensor) -> Tensor:
    """``x`` as a tensor of ``like``'s dtype on ``like``'s device (cast on the host first: MPS has
    no float64)."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype=like.dtype).to(device=like.device)


def eps_of(dtype: torch.dtype) -> float:
    """Machine epsilon of a floating dtype (float32's for anything that is not float64)."""
    return float(torch.finfo(dtype).eps) if dtype.is_floating_point else float(torch.finfo(torch.float32).eps)


def rank_rtol(n: int, dtype: torch.dtype) -> float:
    """Relative cut-off for the eigenvalues of an [n, n] Gramian computed in ``dtype`` and scaled
    to a unit diagonal: its round-off eigenvalues stay below ``n eps / 4`` of the largest (measured
    on rank-deficient float32 Gramians up to 10^4 columns), so ``8 n eps`` (at least 1e-12)."""
    return max(1e-12, 8.0 * n * eps_of(dtype))


def pinv_psd(K: np.ndarray, rtol: float) -> np.ndarray:
    """Pseudo-inverse of a symmetric PSD matrix, eigenvalues below ``rtol`` times the largest dropped."""
    lam, V = np.linalg.eigh(K)
    top = float(lam.max()) if lam.size else 0.0
    keep = lam > rtol * top if top > 0 else np.zeros(lam.shape, dtype=bool)
    Vk = V[:, keep]
    return (Vk / lam[keep]) @ Vk.T


def _masked_solve(K: np.ndarray, rhs: np.ndarray, P: np.ndarray) -> np.ndarray:
    """For each problem b: ``z[P_b] = K[P_b, P_b]^{-1} rhs_b[P_b]``, zero elsewhere (pseudo-inverse
    when singular). Only the free blocks are solved: the batch is padded to the largest free set."""
    b, n = P.shape
    out = np.zeros((b, n))
    k = P.sum(1)
    kmax = int(k.max()) if b else 0
    if kmax == 0:
        return out
    idx = np.argsort(~P, axis=1, kind="stable")[:, :kmax]  # each row: its free indices first, in order
    valid = np.arange(kmax)[None, :] < k[:, None]
    both = valid[:, :, None] & valid[:, None, :]
    A = np.where(both, K[idx[:, :, None], idx[:, None, :]], np.eye(kmax)[None])
    r = np.where(valid, np.take_along_axis(rhs, idx, 1), 0.0)
    try:
        z = np.linalg.solve(A, r[..., None])[..., 0]
        bad = ~np.isfinite(z).all(1)
    except np.linalg.LinAlgError:
        z = np.zeros_like(r)
        bad = np.ones(b, dtype=bool)
    if bad.any():
        z[bad] = (np.linalg.pinv(A[bad], hermitian=True) @ r[bad][..., None])[..., 0]
    np.put_along_axis(out, idx, np.where(valid, z, 0.0), 1)
    return out


def nonneg_qp(K: np.ndarray, q: np.ndarray, tol: float = 1e-12, max_iter: int | None = None) -> np.ndarray:
    """Minimisers [B, n] of ``1/2 x^T K x + q_b^T x`` over ``x >= 0`` for one K [n, n] (symmetric
    PSD, scaled to O(1)) and q [B, n] (Lawson-Hanson active set, batched; feasible at every
    iteration, exact up to round-off once the active set is found)."""
    B, n = q.shape
    x = np.zeros((B, n))
    P = np.zeros((B, n), dtype=bool)
    outer = np.ones(B, dtype=bool)  # x is the optimum on its support
    done = np.zeros(B, dtype=bool)
    rows = np.arange(B)
    for _ in range(max_iter or 3 * n + 20):
        w = -(x @ K) - q  # minus the gradient (K symmetric)
        wm = np.where(P, -np.inf, w)
        j = wm.argmax(1)
        done |= outer & (wm[rows, j] <= tol)
        if done.all():
            break
        add = outer & ~done
        P[rows[add], j[add]] = True
        act = np.flatnonzero(~done)
        Pa, xa = P[act], x[act]
        z = _masked_solve(K, -q[act], Pa)
        feasible = np.asarray(((z > 0) | ~Pa).all(1))
        blocking = Pa & (z <= 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(blocking, xa / np.maximum(xa - z, 1e-300), np.inf)
        alpha = np.clip(ratio.min(1), 0.0, 1.0)
        stepped = np.maximum(xa + alpha[:, None] * (z - xa), 0.0)
        keep = Pa & (stepped > tol * (1 + stepped.max(1, keepdims=True)))
        stepped = np.where(keep, stepped, 0.0)
        x[act] = np.where(feasible[:, None], z, stepped)
        P[act] = np.where(feasible[:, None], Pa, keep)
        outer[act] = feasible
    return x


def refined_solve(A: np.ndarray, b: np.ndarray, steps: int = 2) -> np.ndarray:
    """``A^-1 b`` by LU with ``steps`` of iterative refinement (componentwise accuracy on the badly
    scaled systems of gradients whose norms differ by orders of magnitude); least squares when A
    is singular."""
    try:
        x = np.linalg.solve(A, b)
        for _ in range(steps):
            x = x + np.linalg.solve(A, b - A @ x)
        if np.isfinite(x).all():
            return x
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(A, b, rcond=None)[0]


def _affine_min(K: np.ndarray) -> np.ndarray:
    """The minimiser of ``y^T K y`` over ``sum y = 1`` (least squares when the KKT system is singular)."""
    k = K.shape[0]
    A = np.empty((k + 1, k + 1))
    A[:k, :k] = K
    A[:k, k] = 1.0
    A[k, :k] = 1.0
    A[k, k] = 0.0
    b = np.zeros(k + 1)
    b[k] = 1.0
    return refined_solve(A, b, 1)[:k]


def min_norm_point(K: np.ndarray, max_iter: int | None = None) -> tuple[np.ndarray, float]:
    """Simplex weights ``w`` minimising ``w^T K w`` and that minimum (K: a Gramian [n, n], float64).

    Wolfe's algorithm (1976) on the Gramian alone: the support (a "corral") stays affinely
    independent; each major step adds the vertex that most decreases the inner product with the
    current point, each minor step moves to the corral's affine minimiser or to the boundary and
    drops a vertex. It stops when no vertex improves the optimality gap ``w^T K w - min_j (K w)_j``
    beyond 1e-13 relative (round-off of the products) or when a step no longer decreases the norm
    (the origin reached up to round-off). Exact up to round-off; ties go to the lowest index.
    An all-zero K gives equal weights."""
    n = K.shape[0]
    diag = np.diag(K).copy()
    scale = float(diag.max()) if n else 0.0
    if n == 1:
        return np.ones(1), max(float(K[0, 0]), 0.0)
    if not scale > 0:
        return np.full(n, 1.0 / n), 0.0
    Kn = K / scale  # scale-free tolerances
    k = int(np.argmin(np.diag(Kn)))
    S = [k]
    wS = np.ones(1)
    w = np.zeros(n)
    w[k] = 1.0
    q = float(Kn[k, k])
    for _ in range(max_iter or 10 * n + 10):
        g = Kn[:, S] @ wS  # (K w)_j
        j = int(np.argmin(g))
        gap = q - float(g[j])
        if gap <= 1e-13 * q + 1e-15 * np.sqrt(max(q, 0.0)) * np.sqrt(float(Kn[j, j])) or j in S:
            break
        S_new, w_new = [*S, j], np.append(wS, 0.0)
        while True:  # minor cycle
            y = _affine_min(Kn[np.ix_(S_new, S_new)])
            if (y > 0).all():
                w_new = y
                break
            neg = y <= 0
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.where(neg, w_new / (w_new - y), np.inf)
            i = int(np.argmin(ratios))
            theta = float(np.clip(ratios[i], 0.0, 1.0))
            w_new = w_new + theta * (y - w_new)
            w_new[i] = 0.0
            live = w_new > 0
            S_new, w_new = [s for s, a in zip(S_new, live) if a], w_new[live]
            if not S_new:  # cannot happen in exact arithmetic; keep the last point
                S_new, w_new = S, wS
                break
        w_new = w_new / w_new.sum()
        q_new = float(w_new @ Kn[np.ix_(S_new, S_new)] @ w_new)
        if not q_new < q:  # no progress: the origin (or round-off) reached
            break
        S, wS, q = S_new, w_new, q_new
    w = np.zeros(n)
    w[S] = wS
    return w, max(q, 0.0) * scale


def dual_cone_weights(M: np.ndarray, U: np.ndarray, norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> np.ndarray:
    """Weights ``v`` [k, n] of the projections of ``G^T u`` (u: the rows of U [k, n], non-negative)
    onto the dual cone ``{x: G x >= 0}``, given the Gramian ``M = G G^T`` [n, n] (float64 host
    arrays): ``v = argmin_{v >= u} v^T M v`` (Proposition 1 of Quinton & Rey 2024), on ``M``
    normalised by its trace (zero when the trace is below ``norm_eps``) plus ``reg_eps I``, as
    torchjd does."""
    tr = float(np.trace(M))
    Mn = np.zeros_like(M) if tr < norm_eps else M / max(tr, 1e-300)
    Mn = Mn + reg_eps * np.eye(M.shape[0])
    x = nonneg_qp(Mn, U @ Mn)  # v = u + x: min 1/2 x^T M x + (M u)^T x, x >= 0
    return U + x
