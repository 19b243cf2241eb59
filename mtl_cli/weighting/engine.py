"""The gradient engine: what every gradient-based method (MGDA, PCGrad, IMTL-G, ...) needs, in one
place, so that a method is only its aggregation rule.

Per step, for the tasks present in the batch, :class:`GradientWeighting.backward`:

1. computes the per-task gradients ``G`` [T, P] of the (unscaled) losses with respect to
   - ``source=params``: the shared parameters (``model.shared_parameters()``): exact; or
   - ``source=rep``: the shared representation (``model.encode``'s output, when the architecture
     has one, ``shared_representation``): cheap, since only the heads are differentiated T times;
   by a loop of ``autograd.grad`` calls (``mode=loop``) or by batched vector-Jacobian products
   (``mode=batched``: ``is_grads_batched``, ``chunk_size`` tasks at a time; falls back to the loop
   where an operator has no batching rule);
2. checks that every row is finite (else the optimizer step is skipped with a warning naming the
   tasks: never a NaN in the weights). Host synchronisations: a ``gramian_weights`` method gets
   the Gramian of every block and the losses to the host in one copy (:func:`._qp.fetched`), where
   its solver runs and the rows' finiteness is read from the diagonal: one read per micro-batch.
   For a method with its own ``aggregate``, and for the update's finiteness, the check is a device
   flag handed to the trainer (``ctx.skip_if``: with ``on_nonfinite=skip`` the step is masked on
   the device and the skip logged at the next log; a non-finite row is zeroed and a non-finite
   update replaced by 0 first, so ``.grad`` never holds a NaN). ``every=k`` (k > 1) reads its
   step counter once per micro-batch;
3. asks the method for its aggregation of ``G`` and :class:`Rows` (which tasks the rows are, their
   losses, and which block of the gradient: ``grouping=layer`` aggregates each parameter tensor's
   block on its own): weights ``w`` (the update is ``w @ G``) or a direction [P]. A method that
   only needs the Gramian implements ``gramian_weights(M, rows)`` and the engine forms ``M = G G^T``
   and ``w @ G``; one that needs G itself implements ``aggregate(G, rows)``;
4. applies it: ``source=params`` adds the direction to the shared parameters' ``.grad`` (times the
   AMP scale and accumulation divisor, so accumulation and GradScaler work unchanged);
   ``source=rep`` back-propagates the direction from the representation into the encoder. The
   task-specific parameters receive the gradient of the plain sum of the task losses (each head
   its own loss), as in LibMTL and torchjd.

``every=k`` recomputes the aggregation every k steps and reuses the weights in between (one plain
weighted backward). The Gramian ``G G^T`` [T, T] is all that ``gramian_weights`` methods read: under
data parallelism it is the only quantity to all-reduce for representation gradients (the Gramian
of the global Jacobian is the sum of the local ones), while methods with their own ``aggregate``
need ``G`` whole.

Hard inputs, one rule each, for every registered method:

- non-finite input: ``gramian_weights`` / ``aggregate`` given a non-finite ``M`` or ``G`` return
  NaN weights (None for direction-only methods) and a NaN direction, without running the method or
  touching its state (:meth:`GradientWeighting.__init_subclass__` wraps every implementation). The
  engine never gets there: it skips such a step first (step 2). It also skips a step whose update
  comes back non-finite, naming the method, so ``.grad`` never receives a NaN;
- zero and negligible rows (a gradient whose norm is at most the dtype's epsilon times the largest
  row's, a head that got no gradient this step): a method that divides by a row or is dominated by
  it (IMTL-G, Nash-MTL, FairGrad, ConFIG, MGDA with ``normalization``) solves on the other rows and
  gives these weight 0 (:func:`informative_rows`, :func:`weights_on_informative_rows`); an all-zero
  block gives zero weights and a zero direction;
- ill-posed problems (Nash-MTL and FairGrad when 0 is in the convex hull of the gradients: no
  direction improves every task) give a zero direction and a warning, once per run
  (:meth:`GradientWeighting.warn_once`, logger ``mtl_cli``).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from ..config.params import PosInt
from ..config.typecheck import config_params
from ..errors import Problem
from ._qp import eps_of, fetched, host, to_torch
from .base import BackwardContext, Weighting, rows_present

log = logging.getLogger("mtl_cli")


def shared_params(model: nn.Module) -> list[Tensor]:
    return [p for p in cast(Any, model).shared_parameters() if p.requires_grad]


def task_params(model: nn.Module) -> list[Tensor]:
    seen: set[int] = set()
    out: list[Tensor] = []
    m = cast(Any, model)  # an MTLModel: task_names and task_parameters
    for t in m.task_names:
        for p in m.task_parameters(t):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _flat(grads, like: list[Tensor]) -> Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(x)).reshape(-1) for g, x in zip(grads, like)])


def jacobian(
    losses: Tensor,
    wrt: list[Tensor],
    rows: list[int],
    mode: str = "loop",
    chunk_size: int | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> Tensor:
    """Gradients of ``losses[i]`` for i in ``rows`` with respect to ``wrt``, flattened: [len(rows), P].
    ``mode=batched`` falls back to the loop when an operator has no batching rule, and then calls
    ``on_fallback`` with torch's reason."""
    if mode == "batched" and len(rows) > 1:
        try:
            out = []
            step = chunk_size or len(rows)
            for lo in range(0, len(rows), step):
                idx = rows[lo : lo + step]
                eye = torch.zeros(len(idx), losses.shape[0], dtype=losses.dtype, device=losses.device)
                eye[torch.arange(len(idx)), torch.tensor(idx)] = 1.0
                gs = torch.autograd.grad(
                    losses, wrt, grad_outputs=eye, retain_graph=True, allow_unused=True, is_grads_batched=True
                )
                out.append(
                    torch.cat(
                        [
                            (
                                g if g is not None else torch.zeros(len(idx), *x.shape, device=x.device, dtype=x.dtype)
                            ).reshape(len(idx), -1)
                            for g, x in zip(gs, wrt)
                        ],
                        dim=1,
                    )
                )
            return torch.cat(out)
        except RuntimeError as e:  # an operator without a batching rule: the loop below is always exact
            if on_fallback is not None:
                on_fallback(next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)[:200])
    dtypes = {x.dtype for x in wrt}
    if len(dtypes) != 1:
        return torch.stack(
            [_flat(torch.autograd.grad(losses[i], wrt, retain_graph=True, allow_unused=True), wrt) for i in rows]
        )
    # each row written in place into G (no list of rows and no stacked copy: half the memory traffic)
    G = torch.empty(len(rows), sum(x.numel() for x in wrt), dtype=dtypes.pop(), device=losses.device)
    for j, i in enumerate(rows):
        grads = torch.autograd.grad(losses[i], wrt, retain_graph=True, allow_unused=True)
        torch.cat([(g if g is not None else torch.zeros_like(x)).reshape(-1) for g, x in zip(grads, wrt)], out=G[j])
    return G


def method_jacobian(method: Any, losses: Tensor, wrt: list[Tensor], rows: list[int]) -> Tensor:
    """:func:`jacobian` with a method's ``mode`` and ``chunk_size``; when ``mode=batched`` cannot
    batch this model's backward, the method switches to the loop for the rest of the run (no
    failed attempt per step) and says so once."""

    def fallback(reason: str) -> None:
        method.mode = "loop"
        log.warning(
            "weighting.mode=batched: this model's backward cannot be batched (%s); the task gradients are "
            "formed one by one (mode=loop) from now on, with the same values",
            reason,
        )

    return jacobian(losses, wrt, rows, method.mode, method.chunk_size, fallback)


@dataclass(frozen=True)
class Rows:
    """What a method knows about the rows of the gradient block it aggregates."""

    index: list[int]  # the task index of each row of G (tasks absent from the step have no row)
    losses: Tensor  # [n] their detached (pre-scaled) losses
    block: int = 0  # which block of the gradient (grouping=layer: one per parameter tensor)
    offset: int = 0  # the block's first column in the whole gradient
    blocks: int = 1  # how many blocks this step has
    size: int = 0  # columns of the whole gradient (every block)

    @staticmethod
    def every(G: Tensor, losses: Tensor | None = None) -> Rows:
        """Every task, one block: what a direct call of ``aggregate(G)`` (tests, references) means."""
        n = G.shape[0]
        if losses is None:
            losses = torch.ones(n, dtype=G.dtype, device=G.device)
        return Rows(list(range(n)), losses, 0, 0, 1, G.shape[1])


def informative_rows(M64: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """bool [n]: the rows of a Gramian (float64 host array) whose gradient carries information: a
    norm above ``eps(dtype)`` times the largest row's norm (``dtype``: the precision the Gramian was
    computed in). Zero rows, rows below that and every row of an all-zero Gramian are False."""
    norms = np.sqrt(np.clip(np.diag(M64), 0.0, None))
    top = float(norms.max()) if norms.size else 0.0
    return norms > eps_of(dtype) * top


def weights_on_informative_rows(M: Tensor, solve: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Tensor:
    """Weights [n] (M's dtype and device) of a method that must not see zero or negligible rows:
    ``solve(M_kept, keep)`` gets the float64 host Gramian of the informative rows (and their mask)
    and returns their weights; the other rows get 0 (all of them when every row is negligible: a
    zero direction)."""
    M64 = host(M)
    keep = informative_rows(M64, M.dtype)
    w = np.zeros(M64.shape[0])
    if keep.any():
        w[keep] = solve(M64[np.ix_(keep, keep)], keep)
    return to_torch(w, M)


def _finite_guard(fn: Callable, kind: str) -> Callable:
    """``fn`` (a method's ``gramian_weights`` or ``aggregate``) that returns NaN instead of running
    on a non-finite input (the one rule for non-finite inputs, see the module docstring)."""
    if getattr(fn, "_finite_guard", False):
        return fn
    wrapped: Callable

    if kind == "gramian_weights":

        @functools.wraps(fn)
        def gramian_weights(self, M, rows, *args, **kwargs):
            with fetched(M, rows.losses):  # the one host copy of M the method's solver reads
                if not np.isfinite(host(M)).all():
                    return torch.full((M.shape[0],), math.nan, dtype=M.dtype, device=M.device)
                return fn(self, M, rows, *args, **kwargs)

        wrapped = gramian_weights
    else:

        @functools.wraps(fn)
        def aggregate(self, G, rows=None, *args, **kwargs):
            if not self.__dict__.get("_rows_checked") and not bool(torch.isfinite(G).all()):
                d = torch.full((G.shape[1],), math.nan, dtype=G.dtype, device=G.device)
                w = torch.full((G.shape[0],), math.nan, dtype=G.dtype, device=G.device) if self.linear else None
                return w, d
            return fn(self, G, rows, *args, **kwargs)

        wrapped = aggregate
    setattr(wrapped, "_finite_guard", True)  # noqa: B010
    return wrapped


class GradientWeighting(Weighting):
    """Base of gradient-based methods: subclasses implement :meth:`gramian_weights` (weights from
    the Gramian) or :meth:`aggregate` (weights and/or a direction from G itself).

    Engine keys (every gradient method takes them; a method's ``__init__`` passes ``**engine`` on):
    ``source`` (params | rep), ``grouping`` (whole | layer; params only), ``every`` (recompute
    every k steps), ``mode`` (loop | batched) and ``chunk_size`` (tasks per batched product).
    """

    requires = frozenset({"losses", "grads"})
    #: class attribute: the method returns weights (True) or a direction only (False)
    linear: bool = True
    last_weights: Tensor  # [T] buffer: the weights of the last computed step (reused with every=k)
    computed_at: Tensor  # scalar buffer: the step they were computed at

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        source: Literal["params", "rep"] = "params",
        grouping: Literal["whole", "layer"] = "whole",
        every: PosInt = 1,
        mode: Literal["loop", "batched"] = "loop",
        chunk_size: PosInt | None = None,
    ):
        super().__init__(task_names, task_weights)
        self.source, self.grouping, self.every, self.mode, self.chunk_size = source, grouping, every, mode, chunk_size
        self.register_buffer("last_weights", torch.ones(len(task_names)))
        self.register_buffer("computed_at", torch.tensor(-1, dtype=torch.long))

    # ------------------------------------------------------------------ the method's part
    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        """Weights [n] from the Gramian ``M = G G^T`` [n, n] of the rows ``rows``."""
        raise NotImplementedError(f"{type(self).__name__} implements neither gramian_weights nor aggregate")

    def aggregate(self, G: Tensor, rows: Rows | None = None) -> tuple[Tensor | None, Tensor]:
        """From the gradients ``G`` [n, P] of the rows ``rows`` (default: every task, one block):
        (weights [n] or None, direction [P]). By default the weights come from the Gramian."""
        rows = rows if rows is not None else Rows.every(G)
        w = self.gramian_weights(G @ G.T, rows).to(G.dtype)
        return w, w @ G

    @staticmethod
    def gramian(G: Tensor) -> Tensor:
        return G @ G.T

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ("gramian_weights", "aggregate"):
            if name in cls.__dict__:
                setattr(cls, name, _finite_guard(cls.__dict__[name], name))

    def warn_once(self, key: str, message: str) -> None:
        """Log ``message`` as a warning on the ``mtl_cli`` logger the first time ``key`` is seen by
        this method object (once per run)."""
        warned = self.__dict__.setdefault("_warned", set())
        if key not in warned:
            warned.add(key)
            log.warning(message)

    # ------------------------------------------------------------------ the engine
    def model_problems(self, model: nn.Module, name: str) -> list:
        """A model without shared parameters (an MLP backbone with ``hidden=[]``, a linear model per
        task) leaves a gradient method nothing to act on: refused, with the ways out."""
        if shared_params(model):
            return []
        return [
            Problem(
                "weighting",
                "this method combines the tasks' gradients on the shared parameters, and the model has none "
                "(its backbone passes the input to the heads unchanged)",
                name,
                "a method on the losses (ew, static, uw, dwa, ...)",
                "give the backbone parameters (for an MLP, e.g. backbone.hidden=[64]) or set weighting=ew",
            )
        ]

    @classmethod
    def check(cls, node: dict, arch_cls: type, task_names: list[str]) -> list:
        out = []
        source = node.get("source", cls.default_source())
        if source == "rep" and not getattr(arch_cls, "shared_representation", False):
            out.append(
                Problem(
                    "weighting.source",
                    "representation gradients need one representation shared by every "
                    "task, which this architecture does not have (it gives each task or input "
                    "its own)",
                    "rep",
                    "params",
                    "set weighting.source=params (exact, costlier)",
                )
            )
        if source == "rep" and node.get("grouping", "whole") == "layer":
            out.append(
                Problem(
                    "weighting.grouping",
                    "per-layer grouping applies to parameter gradients only",
                    "layer",
                    "whole",
                    "set weighting.grouping=whole or weighting.source=params",
                )
            )
        every = node.get("every", 1)
        if every != 1 and not cls.linear:
            out.append(
                Problem(
                    "weighting.every",
                    "this method returns an update direction, not task weights, so "
                    "there is nothing to reuse between steps",
                    every,
                    "1",
                    "set weighting.every=1",
                )
            )
        return out

    @classmethod
    def default_source(cls) -> str:
        """The ``source`` a node without the key gets (``mgda_ub`` defaults to ``rep``)."""
        return config_params(cls)["source"][1]

    def _reuse(self, step: int) -> bool:
        """``every=k``: whether this step reuses the weights computed less than k steps ago (one
        host read of the counter, only with k > 1: a skipped step may have put it back)."""
        if self.every == 1:
            return False
        at = int(self.computed_at)
        return at >= 0 and step - at < self.every

    def weighted_backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        """The engine's step (module docstring). With several processes (``ctx.comm``): the
        processes' task gradients ``G`` (``source=params``: one all-reduce of [n, P], averaged) or
        their Gramian (``source=rep``: one all-reduce of [n, n]; the global Jacobian is the local
        ones side by side, so its Gramian is their sum, over ``world^2`` for the shares' scale);
        every process then reaches the same weights, and each back-propagates ``w @ G`` of its own
        rows (``losses`` carry the global batch's values and this process's share of the
        gradient, ``Comm.global_losses``)."""
        model = ctx.model
        if self.every > 1 and self._reuse(ctx.step):
            # reuse the last weights: shared parameters get the weighted sum, heads their own loss
            w = self.last_weights.to(losses.dtype)
            if ctx.present is not None:
                w = w * ctx.present
            shared = shared_params(model)
            grads = torch.autograd.grad((w * losses).sum(), shared, retain_graph=True, allow_unused=True)
            self._add_to_grads(shared, _flat(grads, shared) * ctx.grad_scale)
            own = task_params(model)
            ctx.backward(losses.sum() if own else (losses * 0).sum(), inputs=own or None)
            return w.detach()
        index = rows_present(ctx, losses.shape[0])
        use_rep = self.source == "rep"
        wrt = [ctx.rep] if use_rep else shared_params(model)
        s = ctx.amp_scale  # fp16: differentiate the scaled losses (no underflow), then unscale
        G = method_jacobian(self, losses * s if s != 1.0 else losses, wrt, index)
        if s != 1.0:
            G = G / s
        detached = losses.detach()
        comm = ctx.comm if ctx.comm is not None and ctx.comm.active else None
        M = None
        if comm is not None and use_rep:
            M = comm.all_reduce(G @ G.T, "sum", "gramian") / comm.world**2
        elif comm is not None:
            G = comm.all_reduce(G, "avg", "task gradients")
        solved = self._solve(G, M, wrt, use_rep, index, detached[index], ctx)
        if solved is not None:
            weights, direction = solved
            ok = torch.isfinite(direction).all()
            if weights is not None:
                ok = ok & torch.isfinite(weights).all()
            if _flag(ctx, ~ok, f"weighting {type(self).__name__} returned a non-finite update"):
                solved = None
            else:  # (decided on the device: the step is masked; .grad never gets a NaN)
                direction = torch.where(ok, direction, 0.0)
        if solved is None:  # skipped, known on the host
            ctx.backward((losses * 0).sum())  # keeps the graph freed; adds nothing
            return torch.full_like(detached, math.nan)
        full_w = torch.zeros_like(detached)
        if weights is not None:
            full_w[index] = weights.to(full_w.dtype)
            self.last_weights.copy_(full_w)
            self.computed_at.fill_(ctx.step)
        # task-specific parameters: the plain sum of the losses (each head gets its own loss)
        own = task_params(model)
        if use_rep:
            rep_grad = direction.reshape_as(ctx.rep).to(ctx.rep.dtype) * ctx.grad_scale
            torch.autograd.backward(ctx.rep, grad_tensors=rep_grad, inputs=shared_params(model), retain_graph=True)
        else:
            self._add_to_grads(wrt, direction * ctx.grad_scale)
            if comm is not None:
                comm.mark_synced(wrt)  # the same direction on every process
        ctx.backward(losses.sum() if own else (losses * 0).sum(), inputs=own or None)
        return full_w if weights is not None else torch.full_like(full_w, math.nan)

    def _solve(
        self, G: Tensor, M: Tensor | None, wrt: list[Tensor], use_rep: bool, index: list[int], losses: Tensor, ctx
    ) -> tuple[Tensor | None, Tensor] | None:
        """(weights [n] or None, direction [P]) for the rows ``G``, or None when the step is
        skipped for non-finite rows (said through ``ctx``). Gramian methods: the Gramian of each
        block (``M``: given, the processes' sum) and the losses reach the host in one copy, where
        a non-finite diagonal entry names a non-finite row; other methods: the rows' finiteness is
        a device flag (``ctx.skip_if``) and a non-finite row is zeroed for the method."""
        P = G.shape[1]
        names = [self.task_names[i] for i in index]
        if self.gramian_based():
            spans = [(0, P)] if use_rep or self.grouping == "whole" else _spans(wrt)
            Ms = [M] if M is not None else [G[:, lo:hi] @ G[:, lo:hi].T for lo, hi in spans]
            with fetched(*Ms, losses):
                bad = ~np.isfinite(np.stack([np.diag(host(m)) for m in Ms])).all(axis=0)
                if bad.any():
                    if ctx.skip_step is not None:
                        ctx.skip_step(f"non-finite gradients of task(s) {', '.join(np.array(names)[bad])}")
                    return None
                ws = [
                    self.gramian_weights(m, Rows(index, losses, k, lo, len(spans), P)).to(G.dtype)
                    for k, (m, (lo, _)) in enumerate(zip(Ms, spans))
                ]
            direction = torch.cat([w @ G[:, lo:hi] for w, (lo, hi) in zip(ws, spans)])
            return (ws[0] if len(ws) == 1 else torch.stack(ws).mean(0)), direction
        row_ok = torch.isfinite(G).all(dim=1)
        verdict = _flag(ctx, ~row_ok, "non-finite gradients of task(s)", names)
        if verdict:
            return None
        if verdict is None:  # decided on the device: the method sees zeros, the step is masked
            G = torch.where(row_ok[:, None], G, 0.0)
        self.__dict__["_rows_checked"] = True  # (the method's own finiteness guard is not needed)
        try:
            return self._aggregate_blocks(G, wrt, use_rep, index, losses)
        finally:
            self.__dict__["_rows_checked"] = False

    # ------------------------------------------------------------------ several processes
    @classmethod
    def gramian_based(cls) -> bool:
        """Whether the method's weights come from the Gramian alone (it implements
        ``gramian_weights``, not its own ``aggregate``)."""
        for klass in cls.__mro__:
            if klass is GradientWeighting:
                return True
            if "aggregate" in klass.__dict__:
                return False
        return True

    def data_parallel_problems(self) -> list:
        """Representation gradients of different processes belong to different samples: only the
        Gramian can be summed over them, so a method that needs the gradients themselves
        (``aggregate``) cannot use ``source=rep`` with several processes."""
        if self.source == "rep" and not self.gramian_based():
            return [
                Problem(
                    "weighting.source",
                    "with several processes, representation gradients combine through their Gramian, and this "
                    "method needs the gradients themselves",
                    "rep",
                    "params",
                    "set weighting.source=params (its task gradients are averaged over the processes)",
                )
            ]
        return []

    def _aggregate_blocks(
        self, G: Tensor, wrt: list[Tensor], use_rep: bool, index: list[int], losses: Tensor
    ) -> tuple[Tensor | None, Tensor]:
        P = G.shape[1]
        if use_rep or self.grouping == "whole":
            return self.aggregate(G, Rows(index, losses, 0, 0, 1, P))
        parts, ws, lo = [], [], 0
        for k, x in enumerate(wrt):
            hi = lo + x.numel()
            w, d = self.aggregate(G[:, lo:hi], Rows(index, losses, k, lo, len(wrt), P))
            parts.append(d)
            if w is not None:
                ws.append(w)
            lo = hi
        return (torch.stack(ws).mean(0) if len(ws) == len(wrt) else None), torch.cat(parts)

    @staticmethod
    def _add_to_grads(params: list[Tensor], direction: Tensor) -> None:
        lo = 0
        for p in params:
            hi = lo + p.numel()
            g = direction[lo:hi].reshape_as(p).to(p.dtype)
            p.grad = g.clone() if p.grad is None else p.grad.add_(g)
            lo = hi


def _spans(wrt: list[Tensor]) -> list[tuple[int, int]]:
    """The column range of each tensor of ``wrt`` in the flattened gradient."""
    ends = np.cumsum([0] + [x.numel() for x in wrt]).tolist()
    return list(zip(ends[:-1], ends[1:]))


def _flag(ctx: BackwardContext, cond: Tensor, why: str, labels: list[str] | None = None) -> bool | None:
    """Skip the step where the bool tensor ``cond`` is set (0-d, or one entry per label of
    ``labels``, which the reason then names). Through ``ctx.skip_if`` when the trainer gives it
    (``on_nonfinite=skip``: decided on the device, None), else by reading ``cond`` (True: skipped)."""
    if ctx.skip_if is not None:
        return ctx.skip_if(cond, why, labels)
    hits = cond.reshape(-1).tolist()
    if not any(hits):
        return False
    if ctx.skip_step is not None:
        named = ", ".join(label for label, hit in zip(labels or [], hits) if hit)
        ctx.skip_step(f"{why} {named}" if named else why)
    return True


for _name in ("gramian_weights", "aggregate"):
    setattr(GradientWeighting, _name, _finite_guard(getattr(GradientWeighting, _name), _name))
