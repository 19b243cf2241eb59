"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018, "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts")."""

from __future__ import annotations

from ...config.params import NonNegInt, PosInt
from ...registry import ARCHS
from ..base import ArchInfo, ModelContext
from ..staged import Gate
from ._experts import ExpertModel, check_shared_stages


@ARCHS.register("mmoe")
class MMoE(ExpertModel):
    """MMoE (Ma et al., KDD 2018): ``num_experts`` experts shared by every task and one softmax
    gate per task; task t's features are ``sum_e g_t,e(x) * expert_e(stem(x))``.

    - Shared: the stem (the backbone's first ``shared_stages`` stages) and the experts (each a
      fresh copy of the stages after the stem).
    - Task-specific: the task's gate (a linear layer + softmax on the pooled stem output, see
      ``staged.Gate``) and its head.
    - ``encode`` returns ``{task: mixed expert features}``, each of the backbone's final shape.

    A task's own parameters get no gradient from another task's loss. With one expert the gate
    is 1 and the model is hard parameter sharing with one backbone.
    """

    def __init__(self, ctx: ModelContext, *, num_experts: PosInt = 4, shared_stages: NonNegInt = 1):
        super().__init__([t.name for t in ctx.tasks])
        self.num_experts, self.shared_stages = num_experts, shared_stages
        self._build(
            ctx,
            self._node(),
            shared_stages=shared_stages,
            levels=1,
            num_shared=num_experts,
            num_task=0,
            task_gate=self._gate,
        )

    def _gate(self, shape, n):
        """A task's gate over ``n`` experts (subclasses such as DSelect-k change it)."""
        return Gate(shape, n)

    def _node(self) -> dict:
        """The config values the build-time check sees."""
        return {"num_experts": self.num_experts, "shared_stages": self.shared_stages}

    @property
    def experts(self):
        """The shared experts (after the stem), in gate order."""
        return self.levels[0].shared_experts

    @property
    def gates(self):
        """Task name -> gate."""
        return self.levels[0].gates

    @classmethod
    def check(cls, node: dict, info: ArchInfo) -> list:
        if info.stages is None:
            return []
        return check_shared_stages(cls, node, info)
