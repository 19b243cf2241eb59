"""DSelect-k (Hazimeh et al., NeurIPS 2021, "DSelect-k: Differentiable Selection in the Mixture of
Experts with Applications to Multi-Task Learning"): MMoE with sparse, differentiable gates."""

from __future__ import annotations

from ...config.params import NonNegInt, PosInt, Positive
from ...errors import Problem
from ...registry import ARCHS
from ..base import ArchInfo, ModelContext
from ._experts import DSelectKGate, config_value, is_int
from .mmoe import MMoE


@ARCHS.register("dselect_k")
class DSelectK(MMoE):
    """DSelect-k (Hazimeh et al., NeurIPS 2021): MMoE whose softmax gates are replaced by
    per-example DSelect-k gates, so each task mixes at most ``k`` of the ``num_experts`` experts
    once its gate has converged.

    Task t's gate (``_experts.DSelectKGate``) has ``k`` selectors; selector i reads
    ``z_i(x) = W_i pool(stem(x)) + b_i`` (``m = ceil(log2 num_experts)`` code logits) and puts
    ``prod_j (S(z_ij) if bit j of e is 1 else 1 - S(z_ij))`` on expert e, S being the cubic
    smooth-step of width ``gamma``; the gate is ``sum_i softmax(alpha(x))_i * selector_i``. When
    ``num_experts`` is not a power of two the selectors are renormalised over the valid codes
    (see ``DSelectKGate``). ``z`` starts uniform in [-gamma/100, gamma/100] as in the paper's
    code. The paper's optional entropy regulariser (which speeds up convergence to k non-zeros)
    is not implemented: an architecture here has no hook to add a loss term.

    - Shared: the stem (the backbone's first ``shared_stages`` stages) and the experts (each a
      fresh copy of the stages after the stem).
    - Task-specific: the task's DSelect-k gate and its head.
    - ``encode`` returns ``{task: mixed expert features}``, each of the backbone's final shape.
    """

    def __init__(
        self,
        ctx: ModelContext,
        *,
        num_experts: PosInt = 4,
        k: PosInt = 2,
        gamma: Positive = 1.0,
        shared_stages: NonNegInt = 1,
    ):
        self.k, self.gamma = k, gamma
        super().__init__(ctx, num_experts=num_experts, shared_stages=shared_stages)

    def _gate(self, shape, n):
        return DSelectKGate(shape, n, self.k, self.gamma)

    def _node(self) -> dict:
        return super()._node() | {"k": self.k, "gamma": self.gamma}

    @classmethod
    def check(cls, node: dict, info: ArchInfo) -> list:
        if info.stages is None:
            return []
        out = super().check(node, info)
        e, k = (config_value(cls, node, key) for key in ("num_experts", "k"))
        if is_int(k) and is_int(e) and 1 <= e < k:  # (each >= 1 by its annotation)
            out.append(
                Problem(
                    "arch.k",
                    "k (experts each task mixes) must be between 1 and the number of experts",
                    k,
                    allowed=f"1..{e}",
                    fix="set arch.k to at most arch.num_experts",
                )
            )
        return out
