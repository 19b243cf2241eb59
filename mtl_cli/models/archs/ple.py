"""Progressive Layered Extraction (Tang et al., RecSys 2020, "Progressive Layered Extraction (PLE):
A Novel Multi-Task Learning (MTL) Model for Personalized Recommendations"), multi-level."""

from __future__ import annotations

from ...config.params import NonNegInt, PosInt
from ...errors import Problem
from ...registry import ARCHS
from ..base import ArchInfo, ModelContext
from ..staged import Gate
from ._experts import ExpertModel, check_shared_stages, config_value, is_int, stages_after_stem


@ARCHS.register("ple")
class PLE(ExpertModel):
    """PLE (Tang et al., RecSys 2020): ``levels`` stacked extraction layers (CGC layers with
    shared gates).

    The backbone stages after the stem are split into ``levels`` consecutive groups, as even as
    possible (earlier groups take the extra stage: resnet18 with ``shared_stages=1`` and
    ``levels=3`` gives [layer1, layer2], [layer3], [layer4]). At level l every task has
    ``num_task_experts`` own experts and there are ``num_shared_experts`` shared experts, all
    built from group l. Task t's experts read t's current input, the shared experts read the
    shared input (both are the stem output at level 1); task t's softmax gate, computed from t's
    pooled input, mixes ``[t's own experts..., shared experts...]`` into t's next input. At every
    level but the last a shared gate, computed from the pooled shared input, mixes ALL the
    level's experts (every task's, in task order, then the shared ones) into the next shared
    input. The last level's task mixtures go to the heads.

    - Shared: the stem (the backbone's first ``shared_stages`` stages), every level's shared
      experts and shared gates.
    - Task-specific: the task's own experts and gates at every level, and its head.
    - ``encode`` returns ``{task: last level's mixed features}``, each of the backbone's final
      shape.

    ``mixes_task_parameters`` is True when ``levels > 1``, there is more than one task and
    ``num_task_experts > 0``: task A's own experts feed the shared gate, hence every task's next
    level, so task B's loss reaches them. With ``levels=1`` this is ``arch=cgc``.
    """

    def __init__(
        self,
        ctx: ModelContext,
        *,
        levels: PosInt = 2,
        num_shared_experts: PosInt = 2,
        num_task_experts: NonNegInt = 1,
        shared_stages: NonNegInt = 1,
    ):
        super().__init__([t.name for t in ctx.tasks])
        node = {
            "levels": levels,
            "num_shared_experts": num_shared_experts,
            "num_task_experts": num_task_experts,
            "shared_stages": shared_stages,
        }
        self._build(
            ctx,
            node,
            shared_stages=shared_stages,
            levels=levels,
            num_shared=num_shared_experts,
            num_task=num_task_experts,
            task_gate=Gate,
            shared_gate=Gate,
        )
        self.mixes_task_parameters = levels > 1 and len(ctx.tasks) > 1 and num_task_experts > 0

    @classmethod
    def check(cls, node: dict, info: ArchInfo) -> list:
        if info.stages is None:
            return []
        out = check_shared_stages(cls, node, info)
        levels, left = config_value(cls, node, "levels"), stages_after_stem(cls, node, info)
        if is_int(levels) and levels >= 1 and left is not None and levels > left:
            rest = info.stages[len(info.stages) - left :]
            out.append(
                Problem(
                    "arch.levels",
                    f"each level needs at least one backbone stage, and {left} are left "
                    f"after the stem ({', '.join(rest)})",
                    levels,
                    allowed=f"1..{left}",
                    fix=f"set arch.levels to at most {left}, or lower arch.shared_stages",
                )
            )
        return out
