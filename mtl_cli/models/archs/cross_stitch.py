"""Cross-stitch networks (Misra, Shrivastava, Gupta, Hebert, CVPR 2016, "Cross-stitch Networks for
Multi-task Learning"): one backbone column per task, mixed linearly between stages."""

from __future__ import annotations

from typing import Annotated, Iterator

import torch
from torch import Tensor, nn

from ...config.params import NonNegInt, Range
from ...errors import ConfigError, Problem
from ...registry import ARCHS
from ..base import ArchInfo, ModelContext, MTLModel
from ..staged import Staged, channels, make_staged


def _index(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


#: a task's own weight in each unit at the start; the other tasks share the rest
InitSelf = Annotated[float, Range(gt=0, le=1)]


def unit_stages(stages: list[int] | None, n: int) -> list[int]:
    """Indices of the stages after which units sit: ``stages`` sorted, or every stage but the last."""
    return list(range(n - 1)) if stages is None else sorted(stages)


def check_mixing_keys(unit: str, stages, names: list[str], n_tasks: int) -> list[Problem]:
    """Problems with ``stages`` of an architecture that mixes task columns after the backbone
    stages ``names`` (cross-stitch, NDDR): indices of those stages, each once. (``init_self`` and
    the indices' type and sign are declared in the constructor's annotations.)"""
    out: list[Problem] = []
    n = len(names)
    listing = ", ".join(f"{i}={name}" for i, name in enumerate(names))
    if stages is None:
        if n < 2 and n_tasks > 1:
            out.append(
                Problem(
                    "arch.stages",
                    f"the backbone has {n} stage ({listing}), so there is no place between stages for {unit}s",
                    None,
                    allowed=f"stage indices 0..{n - 1}",
                    fix=f"choose a backbone with at least 2 stages, or set arch.stages=[0] to place one "
                    f"{unit} after its only stage",
                )
            )
        return out
    if not isinstance(stages, (list, tuple)) or not all(_index(s) for s in stages):
        return out  # a wrong type or a negative index: the annotation reports it
    bad = [s for s in stages if s >= n]
    if bad:
        out.append(
            Problem(
                "arch.stages",
                f"stage index out of range (the backbone has {n} stage{'s' if n != 1 else ''}: {listing})",
                bad[0] if len(bad) == 1 else bad,
                allowed=f"integers 0..{n - 1}",
                fix=f"list indices of stages after which a {unit} mixes the task columns, e.g. "
                f"arch.stages=[{', '.join(map(str, range(max(1, n - 1))))}], or null for every stage "
                "but the last",
            )
        )
    elif len(set(stages)) != len(stages):
        dup = sorted({s for s in stages if list(stages).count(s) > 1})
        out.append(
            Problem(
                "arch.stages",
                "stage index listed more than once",
                dup,
                allowed="distinct indices",
                fix="list each stage once",
            )
        )
    return out


class CrossStitchUnit(nn.Module):
    """``x'_t = sum_u alpha[t, u] * x_u`` with one ``alpha`` per channel: ``alpha`` is [T, T, C],
    initialised to ``init_self`` on the diagonal and ``(1 - init_self) / (T - 1)`` elsewhere."""

    def __init__(self, n_tasks: int, n_channels: int, init_self: float):
        super().__init__()
        off = (1.0 - init_self) / (n_tasks - 1) if n_tasks > 1 else 0.0
        a = torch.full((n_tasks, n_tasks), off)
        a.fill_diagonal_(init_self)
        self.alpha = nn.Parameter(a[:, :, None].repeat(1, 1, n_channels))

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        stacked = torch.stack(xs)  # [T, B, C, *spatial]
        mixed = torch.einsum("tuc,ubc...->tbc...", self.alpha.to(stacked.dtype), stacked)
        return list(mixed.unbind(0))


class MixedColumns(MTLModel):
    """One backbone column per task, with a mixing unit (``make_unit``) after chosen stages; the
    common part of cross-stitch and NDDR. Columns and heads are task parameters, units shared."""

    single_input = True
    needs_stages = True
    shared_representation = False
    mixes_task_parameters = True  # set per instance: False with one task or no units
    unit_name = "unit"

    @classmethod
    def check(cls, node: dict, info: ArchInfo) -> list:
        if info.stages is None:
            return []  # not stageable: the generic validator reports it
        return check_mixing_keys(cls.unit_name, node.get("stages"), list(info.stages), len(info.task_names))

    def __init__(self, ctx: ModelContext, *, init_self: InitSelf = 0.9, stages: list[NonNegInt] | None = None):
        super().__init__([t.name for t in ctx.tasks])
        self.input_key = ctx.tasks[0].input
        spec = ctx.inputs[self.input_key]
        self.columns = nn.ModuleDict({t: make_staged(ctx.make_backbone, spec) for t in self.task_names})
        first: Staged = self.columns[self.task_names[0]]
        problems = check_mixing_keys(self.unit_name, stages, first.names, len(self.task_names))
        if problems:
            raise ConfigError(problems)
        n_tasks = len(self.task_names)
        self.unit_after = unit_stages(stages, len(first)) if n_tasks > 1 else []
        self.units = nn.ModuleDict(
            {str(s): self.make_unit(n_tasks, first.shapes[s], float(init_self)) for s in self.unit_after}
        )
        self.mixes_task_parameters = bool(self.unit_after)
        self.out_shape = first.shapes[-1]
        self.heads = nn.ModuleDict({t.name: ctx.make_head(t, self.out_shape) for t in ctx.tasks})

    def make_unit(self, n_tasks: int, shape: tuple[int, ...], init_self: float) -> nn.Module:
        """A module mapping the T column outputs (a list, task order) after a stage of output
        ``shape`` to T new ones."""
        raise NotImplementedError

    def encode(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        x = inputs[self.input_key]
        cols = [self.columns[t] for t in self.task_names]
        xs = [x] * len(cols)
        for s in range(len(cols[0])):
            xs = [col.stages[s](xi) for col, xi in zip(cols, xs)]
            if str(s) in self.units:
                xs = self.units[str(s)](xs)
        return dict(zip(self.task_names, xs))

    def decode(self, rep: dict[str, Tensor]) -> dict[str, Tensor]:
        return {t: self.heads[t](rep[t]) for t in self.task_names if t in rep}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.units.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from self.columns[task].parameters()
        yield from self.heads[task].parameters()


@ARCHS.register("cross_stitch")
class CrossStitch(MixedColumns):
    """Cross-stitch networks (Misra et al., CVPR 2016, "Cross-stitch Networks for Multi-task
    Learning").

    - Task-specific: one full backbone copy ("column", its own parameters, built like the hps
      backbone and cut into its stages) per task, and the task's head.
    - Shared: only the cross-stitch units. After each chosen stage ``s`` a unit replaces the
      column outputs by linear mixtures ``x'_t = sum_u alpha_s[t, u, c] * x_u`` with one weight
      per (task, task, channel) (the paper's channel-wise variant); ``alpha`` starts at
      ``init_self`` on the diagonal and ``(1 - init_self) / (T - 1)`` off it (the paper's 0.9 /
      0.1 for two tasks). The paper trains ``alpha`` with a larger learning rate; here it gets the
      optimizer's learning rate like every other parameter.
    - ``encode`` returns ``{task: output of that task's column}`` (after the unit of the last
      stage, if ``stages`` lists it); ``decode`` applies each task's head to its own features.

    Keys: ``init_self`` in (0, 1] (1.0 starts as independent columns); ``stages``: indices of the
    stages after which units are placed (null: after every stage but the last; []: no units,
    i.e. independent networks). With a single task there is nothing to mix: no units, and the
    model is a plain backbone with a head. Because units route every task's loss into every
    column, ``mixes_task_parameters`` is True whenever there are units and two or more tasks.
    Costs T times the backbone's parameters and compute.
    """

    unit_name = "cross-stitch unit"

    def __init__(self, ctx: ModelContext, *, init_self: InitSelf = 0.9, stages: list[NonNegInt] | None = None):
        super().__init__(ctx, init_self=init_self, stages=stages)

    def make_unit(self, n_tasks: int, shape: tuple[int, ...], init_self: float) -> nn.Module:
        return CrossStitchUnit(n_tasks, channels(shape), init_self)
