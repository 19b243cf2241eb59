"""Shared machinery of the expert-based architectures: MMoE, CGC, PLE and DSelect-k.

Not an architecture itself (the registry skips modules whose name starts with ``_``).

Layout, common to all four:

- the backbone's first ``shared_stages`` stages form a shared **stem** (``shared_stages=0``: no
  stem, the experts start at the raw input);
- every **expert** is its own fresh copy of the backbone stages after the stem. An expert slot
  is one fresh backbone (``make_staged``) cut after the stem; for multi-level PLE the slot's
  stages are split into consecutive groups, one per level, so every expert of a level is built
  from that level's stages. The stem copy of a slot is dropped (no unused parameters), except
  for the first slot, whose stem *is* the shared stem: building one backbone less changes
  nothing (every parameter still belongs to exactly one stem or expert);
- **gates** read globally pooled features (``pool``: mean over the spatial axes of an image or
  signal map, the vector itself for vectors), never a flattened raw input: with
  ``shared_stages=0`` a gate reads ``pool(raw input)``, which for tabular vectors is the input;
- every expert's output has the backbone's final shape, so task heads are built with
  ``ctx.make_head(task, final_shape)`` and read the mixed features of their task.

Gate conventions: a task's gate weighs ``[its own experts..., shared experts...]``; a PLE shared
gate weighs ``[task 1's experts..., task 2's experts..., ..., shared experts...]`` (task order).
"""

from __future__ import annotations

import inspect
import itertools
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError, Problem
from ..base import ArchInfo, ModelContext, MTLModel, pool, pooled_dim
from ..staged import Gate, Staged, make_staged

SHARED = "(shared)"  # key of a PLE shared gate in gate_weights() (task names are plain config keys)
GateFactory = Callable[[tuple, int], nn.Module]  # (per-sample input shape, number of experts) -> gate


class Segment(nn.Module):
    """Consecutive stages ``[start, stop)`` of one backbone copy; the identity when empty."""

    def __init__(self, staged: Staged, start: int, stop: int, in_shape: tuple[int, ...]):
        super().__init__()
        self.names = list(staged.names[start:stop])
        self.stages = nn.ModuleList(list(staged.stages)[start:stop])
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(staged.shapes[stop - 1]) if stop > start else self.in_shape

    def forward(self, x: Tensor) -> Tensor:
        for m in self.stages:
            x = m(x)
        return x


class Level(nn.Module):
    """One extraction layer: task-specific experts, shared experts, one gate per task and
    (PLE, all levels but the last) a shared gate."""

    def __init__(
        self,
        task_experts: dict[str, list[Segment]],
        shared_experts: list[Segment],
        gates: dict[str, nn.Module],
        shared_gate: nn.Module | None,
    ):
        super().__init__()
        self.task_experts = nn.ModuleDict({t: nn.ModuleList(e) for t, e in task_experts.items()})
        self.shared_experts = nn.ModuleList(shared_experts)
        self.gates = nn.ModuleDict(gates)
        self.shared_gate = shared_gate


def split_groups(n: int, parts: int) -> list[int]:
    """Sizes of ``parts`` consecutive groups of ``n`` items, as even as possible (larger first)."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def combine(weights: Tensor, stacked: Tensor) -> Tensor:
    """Per-sample weighted sum over dim 1: weights [B, E], stacked [B, E, ...] -> [B, ...]."""
    w = weights.reshape(*weights.shape, *([1] * (stacked.dim() - 2))).to(stacked.dtype)
    return (w * stacked).sum(dim=1)


# ---------------------------------------------------------------------------------------------
# DSelect-k gate (Hazimeh et al., NeurIPS 2021), per-example version


def smooth_step(t: Tensor, gamma: float) -> Tensor:
    """Cubic smooth-step: 0 for t <= -gamma/2, 1 for t >= gamma/2, -2t^3/gamma^3 + 3t/(2 gamma) + 1/2
    in between (continuously differentiable; exactly 0 or 1 outside the polynomial region)."""
    poly = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return torch.where(t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), poly))


class DSelectKGate(nn.Module):
    """Per-example DSelect-k gate over ``n`` experts from globally pooled features.

    ``k`` single-expert selectors; selector i has ``m = ceil(log2 n)`` binary-code logits
    ``z_i(x) = W_i pool(x) + b_i`` and puts weight ``prod_j (S(z_ij) if bit j of e is 1 else
    1 - S(z_ij))`` on expert e (S: :func:`smooth_step`). The gate is ``sum_i softmax(alpha(x))_i *
    selector_i``: non-negative, summing to 1, with at most ``k`` non-zeros once the codes are
    saturated (|z| >= gamma/2).

    When ``n`` is not a power of two only the ``n`` valid codes are kept and each selector is
    renormalised over them (the paper's reference code adds a ``1 / valid mass`` penalty to the
    loss instead). A selector whose valid mass is exactly 0 (saturated on unused codes; its ``z``
    then gets no gradient at all) falls back to the experts its codes name with the top bit
    cleared, which are valid, so the gate still sums to 1 and stays k-sparse.

    Initialisation as in the reference code: ``W``, ``b`` uniform in [-gamma/100, gamma/100]
    (every selector starts near uniform), ``alpha`` uniform in [-0.05, 0.05].
    """

    def __init__(self, shape: tuple[int, ...], n: int, k: int, gamma: float):
        super().__init__()
        if not 1 <= k <= n:
            raise ValueError(f"DSelect-k needs 1 <= k <= n, got k={k}, n={n}")
        d = pooled_dim(shape)
        self.n, self.k, self.gamma = n, k, float(gamma)
        self.m = math.ceil(math.log2(n)) if n > 1 else 0
        self.z = nn.Linear(d, k * self.m) if self.m else None
        self.alpha = nn.Linear(d, k)
        if self.z is not None:
            nn.init.uniform_(self.z.weight, -self.gamma / 100, self.gamma / 100)
            nn.init.uniform_(self.z.bias, -self.gamma / 100, self.gamma / 100)
        nn.init.uniform_(self.alpha.weight, -0.05, 0.05)
        nn.init.uniform_(self.alpha.bias, -0.05, 0.05)
        codes = [[(e >> j) & 1 == 1 for j in range(self.m)] for e in range(2**self.m)]
        self.register_buffer(
            "codes", torch.tensor(codes, dtype=torch.bool).reshape(2**self.m, self.m), persistent=False
        )

    def selectors(self, pooled: Tensor) -> Tensor:
        """Each selector's distribution over the ``n`` experts: [B, k, n]."""
        b = pooled.shape[0]
        if self.z is None:  # one expert: every selector picks it
            return pooled.new_ones(b, self.k, 1, dtype=torch.float32)
        s = smooth_step(self.z(pooled).float().reshape(b, self.k, 1, self.m), self.gamma)
        r = torch.where(self.codes, s, 1 - s).prod(dim=-1)  # [B, k, 2^m]
        if self.n == 2**self.m:
            return r
        valid = r[..., : self.n]
        mass = valid.sum(dim=-1, keepdim=True)
        half = 2 ** (self.m - 1)  # n is in (half, 2 half): codes >= n have the top bit set
        folded = valid + F.pad(r[..., self.n :], (self.n - half, self.n - half))
        ok = mass > 0
        return torch.where(ok, valid / torch.where(ok, mass, torch.ones_like(mass)), folded)

    def forward(self, x: Tensor) -> Tensor:
        p = pool(x)
        a = torch.softmax(self.alpha(p).float(), dim=-1)  # [B, k]
        return (a.unsqueeze(-1) * self.selectors(p)).sum(dim=1)  # [B, n]


# ---------------------------------------------------------------------------------------------
# config checks


def _default(cls: type, key: str):
    p = inspect.signature(cls.__init__).parameters.get(key)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def config_value(cls: type, node: dict, key: str):
    return node[key] if key in node else _default(cls, key)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_shared_stages(cls: type, node: dict, info: ArchInfo) -> list[Problem]:
    """The stem (``shared_stages``, an integer >= 0 by its annotation) must leave the experts a stage."""
    n = len(info.stages or [])
    s = config_value(cls, node, "shared_stages")
    if is_int(s) and s >= n:  # (a negative value is refused by the annotation)
        stages = f"{n} stage{'s' if n != 1 else ''} ({', '.join(info.stages)})"
        return [
            Problem(
                "arch.shared_stages",
                f"the stem must leave at least one of the backbone's {stages} to the experts",
                s,
                allowed=f"0..{n - 1}",
                fix=f"set arch.shared_stages to at most {n - 1} (0: experts start at the input)",
            )
        ]
    return []


def stages_after_stem(cls: type, node: dict, info: ArchInfo) -> int | None:
    """Backbone stages left to the experts, or None when shared_stages is itself invalid."""
    s = config_value(cls, node, "shared_stages")
    n = len(info.stages or [])
    return n - s if is_int(s) and 0 <= s < n else None


# ---------------------------------------------------------------------------------------------
# the model


class ExpertModel(MTLModel):
    """Stem -> ``levels`` extraction layers of experts and gates -> one head per task.

    Subclasses choose the counts and the gates and call :meth:`_build` from ``__init__``.
    Shared: the stem, the shared experts and the shared gates. Task-specific: the task's gates,
    its own experts and its head. ``encode`` returns ``{task: mixed features}``.
    """

    single_input = True
    needs_stages = True
    shared_representation = False
    mixes_task_parameters = False

    def _build(
        self,
        ctx: ModelContext,
        node: dict,
        *,
        shared_stages: int,
        levels: int,
        num_shared: int,
        num_task: int,
        task_gate: GateFactory,
        shared_gate: GateFactory = Gate,
    ) -> None:
        names = self.task_names
        self.input_key = ctx.tasks[0].input
        spec = ctx.inputs[self.input_key]
        in_shape = tuple(spec.shape)
        backbone = ctx.make_backbone(spec)
        first = Staged(backbone, in_shape)  # what make_staged does; the backbone name goes into ArchInfo
        info = ArchInfo(
            task_names=names, backbone=type(backbone).__name__, stages=list(first.names), inputs=dict(ctx.inputs)
        )
        del backbone
        problems = type(self).check({"name": "", **node}, info)
        if problems:
            raise ConfigError(problems)

        self.stem = Segment(first, 0, shared_stages, in_shape)
        sizes = split_groups(len(first) - shared_stages, levels)
        bounds = list(itertools.accumulate(sizes, initial=shared_stages))
        spans = list(zip(bounds[:-1], bounds[1:]))  # [(start, stop)] per level

        def cut(staged: Staged) -> list[Segment]:  # one expert per level from one backbone copy
            return [Segment(staged, a, b, staged.shapes[a - 1] if a else in_shape) for a, b in spans]

        # expert slots: the shared ones first, then each task's own, in task order (slot 0 reuses `first`)
        n_slots = num_shared + len(names) * num_task
        slots = [cut(first)] + [cut(make_staged(ctx.make_backbone, spec)) for _ in range(n_slots - 1)]
        shared_slots, task_slots = slots[:num_shared], slots[num_shared:]
        self.levels = nn.ModuleList()
        for li in range(levels):
            shape = self.stem.out_shape if li == 0 else tuple(first.shapes[spans[li][0] - 1])
            own = {t: [task_slots[ti * num_task + j][li] for j in range(num_task)] for ti, t in enumerate(names)}
            gates = {t: task_gate(shape, num_task + num_shared) for t in names}
            sg = shared_gate(shape, len(names) * num_task + num_shared) if li < levels - 1 else None
            self.levels.append(Level(own, [s[li] for s in shared_slots], gates, sg))
        self.final_shape = tuple(first.shapes[-1])
        self.heads = nn.ModuleDict({t.name: ctx.make_head(t, self.final_shape) for t in ctx.tasks})

    def _run(self, x: Tensor, record: list[dict[str, Tensor]] | None = None) -> dict[str, Tensor]:
        x = self.stem(x)
        task_in = dict.fromkeys(self.task_names, x)
        shared_in = x
        for level in self.levels:
            shared_out = [e(shared_in) for e in level.shared_experts]
            own_out = {t: [e(task_in[t]) for e in level.task_experts[t]] for t in self.task_names}
            stacked_shared = torch.stack(shared_out, dim=1) if shared_out else None
            gates: dict[str, Tensor] = {}
            new_in: dict[str, Tensor] = {}
            for t in self.task_names:
                w = gates[t] = level.gates[t](task_in[t])
                n_own = len(own_out[t])
                mixed = combine(w[:, :n_own], torch.stack(own_out[t], dim=1)) if n_own else None
                if stacked_shared is not None:
                    part = combine(w[:, n_own:], stacked_shared)
                    mixed = part if mixed is None else mixed + part
                new_in[t] = mixed
            if level.shared_gate is not None:
                w = gates[SHARED] = level.shared_gate(shared_in)
                every = [o for t in self.task_names for o in own_out[t]] + shared_out
                shared_in = combine(w, torch.stack(every, dim=1))
            if record is not None:
                record.append(gates)
            task_in = new_in
        return task_in

    def gate_weights(self, inputs: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """Per level, ``{task: [B, own + shared]}`` (and ``SHARED: [B, all]`` for PLE's shared gates)."""
        record: list[dict[str, Tensor]] = []
        self._run(inputs[self.input_key], record)
        return record

    def encode(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return self._run(inputs[self.input_key])

    def decode(self, rep: dict[str, Tensor]) -> dict[str, Tensor]:
        return {t: self.heads[t](rep[t]) for t in self.task_names if t in rep}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        mods: list[nn.Module] = [self.stem]
        for level in self.levels:
            mods.append(level.shared_experts)
            if level.shared_gate is not None:
                mods.append(level.shared_gate)
        return itertools.chain.from_iterable(m.parameters() for m in mods)

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        mods: list[nn.Module] = []
        for level in self.levels:
            mods += [level.task_experts[task], level.gates[task]]
        mods.append(self.heads[task])
        return itertools.chain.from_iterable(m.parameters() for m in mods)
