"""Customized Gate Control, the single-level form of Progressive Layered Extraction (Tang et al.,
RecSys 2020, "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
Personalized Recommendations")."""

from __future__ import annotations

from ...config.params import NonNegInt, PosInt
from ...registry import ARCHS
from ..base import ArchInfo, ModelContext
from ..staged import Gate
from ._experts import ExpertModel, check_shared_stages


@ARCHS.register("cgc")
class CGC(ExpertModel):
    """CGC (Tang et al., RecSys 2020, the single-level Customized Gate Control of PLE):
    ``num_shared_experts`` experts shared by every task plus ``num_task_experts`` experts of each
    task's own; task t's softmax gate (on the pooled stem output) mixes
    ``[t's own experts..., shared experts...]``, so its gate has ``num_task_experts +
    num_shared_experts`` weights. Equal to ``arch=ple`` with ``levels=1``.

    - Shared: the stem (the backbone's first ``shared_stages`` stages) and the shared experts
      (each a fresh copy of the stages after the stem).
    - Task-specific: the task's own experts (fresh copies too), its gate and its head.
    - ``encode`` returns ``{task: mixed expert features}``, each of the backbone's final shape.

    A task's own parameters get no gradient from another task's loss.
    """

    def __init__(
        self,
        ctx: ModelContext,
        *,
        num_shared_experts: PosInt = 2,
        num_task_experts: NonNegInt = 1,
        shared_stages: NonNegInt = 1,
    ):
        super().__init__([t.name for t in ctx.tasks])
        node = {
            "num_shared_experts": num_shared_experts,
            "num_task_experts": num_task_experts,
            "shared_stages": shared_stages,
        }
        self._build(
            ctx,
            node,
            shared_stages=shared_stages,
            levels=1,
            num_shared=num_shared_experts,
            num_task=num_task_experts,
            task_gate=Gate,
        )

    @classmethod
    def check(cls, node: dict, info: ArchInfo) -> list:
        if info.stages is None:
            return []
        return check_shared_stages(cls, node, info)
