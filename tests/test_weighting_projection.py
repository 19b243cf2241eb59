"""UPGrad, DualProj, CAGrad and Aligned-MTL: known answers and agreement with torchjd (test-only)."""

from __future__ import annotations

import pytest
import torch

from mtl_cli.registry import WEIGHTINGS
from mtl_cli.weighting.aligned_mtl import aligned_mtl_weights, balance_transformation
from mtl_cli.weighting.cagrad import cagrad_dual_weights, cagrad_weights
from mtl_cli.weighting.dualproj import dualproj_weights
from mtl_cli.weighting.upgrad import upgrad_weights

torchjd = pytest.importorskip("torchjd")
from torchjd import aggregation as A  # noqa: E402


def random_matrices(n_cases=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    for i in range(n_cases):
        t, p = [2, 3, 5, 8][i % 4], 12
        yield torch.randn(t, p, generator=g, dtype=torch.float64)


def test_registered():
    for name in ("upgrad", "dualproj", "cagrad", "aligned_mtl"):
        assert WEIGHTINGS.get(name) is not None


# ---------------------------------------------------------------- known answers
@pytest.mark.parametrize("fn", [upgrad_weights, dualproj_weights])
def test_projection_lands_in_the_dual_cone(fn):
    for G in random_matrices():
        M = G @ G.T
        d = fn(M, reg_eps=0.0) @ G  # exact projection: G d >= 0 up to round-off
        assert (G @ d >= -1e-9 * M.diagonal().sum()).all()
        # with torchjd's regularisation the cone holds up to reg_eps (relative to the trace)
        w = fn(M)
        assert (G @ (w @ G) >= -1e-4 * M.diagonal().sum() * w.abs().max() * 1.01).all()


@pytest.mark.parametrize("fn", [upgrad_weights, dualproj_weights])
def test_non_conflicting_gradients_pass_through(fn):
    G = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 1.0]], dtype=torch.float64)
    assert (G @ G.T >= 0).all()
    w = fn(G @ G.T, reg_eps=0.0)
    assert torch.allclose(w, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-12)


def test_upgrad_two_tasks_by_hand():
    G = torch.tensor([[1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)  # orthogonal: mean
    assert torch.allclose(upgrad_weights(G @ G.T, reg_eps=0.0), torch.tensor([0.5, 0.5], dtype=torch.float64))
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    # g1 projected: g1 - (g1.g2/|g2|^2) g2 = (0.5, 0.5); g2 projected: g2 - (g2.g1) g1 = (0, 1)
    d = upgrad_weights(G @ G.T, reg_eps=0.0) @ G
    assert torch.allclose(d, torch.tensor([0.25, 0.75], dtype=torch.float64), atol=1e-12)


def test_cagrad_c_zero_is_the_mean():
    for G in random_matrices():
        n = G.shape[0]
        assert torch.allclose(cagrad_weights(G @ G.T, c=0.0, rescale=0), torch.full((n,), 1 / n, dtype=G.dtype))


def test_cagrad_direction_is_optimal_in_the_ball():
    """d maximises min_i g_i.d over ||d - g0|| <= c||g0||: d is on the sphere and beats random points of it."""
    g = torch.Generator().manual_seed(3)
    for G in random_matrices():
        c = 0.4
        g0 = G.mean(0)
        d = cagrad_weights(G @ G.T, c=c, rescale=0) @ G
        assert abs(float((d - g0).norm() / (c * g0.norm())) - 1) < 1e-6
        best = float((G @ d).min())
        u = torch.randn(2000, G.shape[1], generator=g, dtype=G.dtype)
        cand = g0 + c * g0.norm() * u / u.norm(dim=1, keepdim=True)
        assert float((cand @ G.T).min(1).values.max()) <= best + 1e-9


def test_cagrad_rescale():
    G = next(iter(random_matrices()))
    w0 = cagrad_weights(G @ G.T, c=0.4, rescale=0)
    assert torch.allclose(cagrad_weights(G @ G.T, c=0.4, rescale=1), w0 / 1.16)
    assert torch.allclose(cagrad_weights(G @ G.T, c=0.4, rescale=2), w0 / 1.4)


def test_aligned_mtl_components_are_orthogonal_with_equal_norms():
    for G in random_matrices():
        M = G @ G.T
        B = balance_transformation(M)
        lam_min = torch.linalg.eigvalsh(M).min()
        # aligned gradients B G: Gramian B M B = lambda_min I (equal norms sqrt(lambda_min), orthogonal)
        assert torch.allclose(B @ M @ B, lam_min * torch.eye(len(M), dtype=M.dtype), atol=1e-9 * float(M.trace()))
        assert torch.allclose(aligned_mtl_weights(M), B.mean(1))


# ---------------------------------------------------------------- agreement with torchjd
# UPGrad / DualProj / Aligned-MTL: the same exact problems (torchjd: quadprog in float64, eigh) solved
# exactly here too: agreement to 1e-9 relative in float64.
@pytest.mark.parametrize(
    "ours,ref", [(upgrad_weights, A.UPGrad), (dualproj_weights, A.DualProj), (aligned_mtl_weights, A.AlignedMTL)]
)
def test_agrees_with_torchjd(ours, ref):
    agg = ref()
    for G in random_matrices(16):
        d, theirs = ours(G @ G.T) @ G, agg(G)
        assert torch.allclose(d, theirs, rtol=1e-9, atol=1e-9 * float(theirs.norm())), (G.shape, d, theirs)


def test_upgrad_dualproj_agree_with_torchjd_in_float32():
    for G in random_matrices():
        G = G.float()
        for ours, ref in ((upgrad_weights, A.UPGrad()), (dualproj_weights, A.DualProj())):
            d, theirs = ours(G @ G.T) @ G, ref(G)
            assert torch.allclose(d, theirs, rtol=1e-5, atol=1e-5 * float(theirs.norm()))


def test_cagrad_agrees_with_torchjd():
    """torchjd solves the dual with CLARABEL (interior point, stopped at its default tolerance): its
    weights agree with ours to 5e-4 relative in the update, and ours is never a worse dual optimum."""
    agg = A.CAGrad(c=0.4)
    for G in random_matrices(16):
        d, theirs = cagrad_weights(G @ G.T, c=0.4, rescale=0) @ G, agg(G)
        assert float((d - theirs).norm() / theirs.norm()) < 5e-4
        M = G @ G.T / (G @ G.T).trace()
        w = cagrad_dual_weights(M, 0.4)
        s = 0.4 * M.mean().sqrt()
        F = lambda v: v @ M.mean(1) + s * (v @ M @ v).sqrt()  # noqa: E731, B023
        n = len(M)
        theirs_w = agg.gramian_weighting(G @ G.T) - 1 / n  # = sqrt(phi)/||g_w|| w*: rescale to the simplex
        theirs_w = theirs_w / theirs_w.sum()
        assert float(F(w)) <= float(F(theirs_w)) + 1e-9
