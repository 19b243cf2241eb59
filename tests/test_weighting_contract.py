"""Contracts every registered weighting method keeps, tested over the whole registry (a new method
is tested without editing a list):

- ``tasks.<name>.weight`` has one meaning: a fixed pre-scale of the task's loss before the method
  sees it; the logged weights are the effective weights on the raw losses;
- a method says whether it ignores that pre-scale (``ignores_task_weights``), and says it truly:
  the shared parameters' update direction is measured with and without a task weight of 3;
- validation warns when task weights are set for a method that ignores them;
- the loss-method contracts (``weights``/``combine``/``LossTransform``) and the gradient ones
  (``gramian_weights``/``aggregate`` with :class:`Rows`) are what the engine and ``composed`` use.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

from mtl_cli.config.compose import compose
from mtl_cli.config.typecheck import config_params
from mtl_cli.registry import WEIGHTINGS
from mtl_cli.validation import validate
from mtl_cli.weighting.base import BackwardContext, LossTransform
from mtl_cli.weighting.engine import GradientWeighting, Rows

NAMES = WEIGHTINGS.names()
TASKS = ["a", "b", "c"]


class Net(nn.Module):
    """One shared linear layer (the representation) and a linear head per task."""

    shared_representation = True

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.task_names = list(TASKS)
        self.body = nn.Linear(5, 4)
        self.heads = nn.ModuleDict({t: nn.Linear(4, 1) for t in TASKS})
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def shared_parameters(self):
        return self.body.parameters()

    def task_parameters(self, t):
        return self.heads[t].parameters()

    def losses(self, x, y):
        z = torch.tanh(self.body(x))
        out = torch.stack([((self.heads[t](z)[:, 0] - y[:, i]) ** 2).mean() for i, t in enumerate(TASKS)])
        return z, out


def _node(name: str) -> dict:
    return {"name": name}


def _shared_updates(name: str, task_weights: list[float], steps: int = 3) -> list[torch.Tensor]:
    """The shared parameters' gradient that the method produces at each of ``steps`` steps (fixed
    data per step, the same for every call)."""
    torch.manual_seed(0)
    model = Net()
    method = WEIGHTINGS.get(name)(TASKS, task_weights)
    g = torch.Generator().manual_seed(1)
    out = []
    for step in range(steps):
        x, y = torch.randn(16, 5, generator=g), torch.randn(16, 3, generator=g)
        model.zero_grad(set_to_none=True)
        z, losses = model.losses(x, y)
        ctx = BackwardContext(
            model=model,
            backward=lambda total, inputs=None: total.backward(inputs=inputs),
            step=step,
            rep=z,
        )
        method.backward(losses, ctx)
        out.append(torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()]).clone())
        method.on_step_end(step + 1)
    return out


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


@pytest.mark.parametrize("name", NAMES)
def test_ignores_task_weights_says_the_truth(name):
    """With ``tasks.b.weight=3`` the shared update's direction is unchanged at every step exactly
    when the method says it ignores task weights."""
    plain = _shared_updates(name, [1.0, 1.0, 1.0])
    weighted = _shared_updates(name, [1.0, 3.0, 1.0])
    cosines = [_cos(a, b) for a, b in zip(plain, weighted)]
    if WEIGHTINGS.get(name).ignores_task_weights(_node(name)):
        assert min(cosines) > 1 - 1e-5, cosines
    else:
        assert min(cosines) < 1 - 1e-3, cosines


@pytest.mark.parametrize("name", NAMES)
def test_task_weight_is_a_prescale_and_the_log_shows_effective_weights(name):
    """``backward`` with task weights equals the same method on losses multiplied by them, and the
    weights it returns are the method's weights on the scaled losses times the task weights."""
    torch.manual_seed(0)
    tw = [1.0, 3.0, 0.5]
    model_a, model_b = Net(), Net()
    a = WEIGHTINGS.get(name)(TASKS, tw)
    b = WEIGHTINGS.get(name)(TASKS, [1.0, 1.0, 1.0])
    x, y = torch.randn(16, 5), torch.randn(16, 3)
    za, la = model_a.losses(x, y)
    zb, lb = model_b.losses(x, y)

    def ctx(model, z):
        return BackwardContext(
            model=model, backward=lambda total, inputs=None: total.backward(inputs=inputs), step=0, rep=z
        )

    wa = a.backward(la, ctx(model_a, za))
    wb = b.backward(lb * torch.tensor(tw), ctx(model_b, zb))
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-5, atol=1e-6)
    if torch.isnan(wb).all():
        assert torch.isnan(wa).all()  # direction-only methods have no weights to log
    else:
        assert torch.allclose(wa, wb * torch.tensor(tw), rtol=1e-5, atol=1e-7)


def test_validation_warns_when_task_weights_are_ignored():
    plan = validate(compose(["weighting=si", "tasks.shape.weight=2"]))
    assert len(plan.warnings) == 1
    assert "tasks.shape.weight=2" in plan.warnings[0] and "weighting=si" in plan.warnings[0]
    assert validate(compose(["weighting=static", "tasks.shape.weight=2"])).warnings == []
    assert validate(compose(["weighting=si"])).warnings == []  # every weight 1: nothing to say


def test_the_engine_keys_are_declared_once():
    """Every gradient method takes the engine's keys, declared only on the engine's ``__init__``."""
    engine = config_params(GradientWeighting)
    assert set(engine) == {"source", "grouping", "every", "mode", "chunk_size"}
    for name in NAMES:
        cls = WEIGHTINGS.get(name)
        if not issubclass(cls, GradientWeighting):
            continue
        keys = config_params(cls)
        assert set(engine) <= set(keys), name
        init = cls.__dict__.get("__init__")
        own = set(inspect.signature(init).parameters) & set(engine) if init is not None else set()
        assert own <= {"source"}, f"{name} repeats engine keys {own}"  # mgda_ub only changes source's default


@pytest.mark.parametrize("name", [n for n in NAMES if issubclass(WEIGHTINGS.get(n), GradientWeighting)])
def test_aggregate_reads_its_rows_from_the_argument(name):
    """Called with two of three tasks present, a method's weights (or direction) are finite and of
    the rows' size, and the method keeps no per-call state on the object (``rows``/``row_losses``)."""
    method = WEIGHTINGS.get(name)(TASKS, [1.0, 1.0, 1.0])
    G = torch.randn(2, 6, generator=torch.Generator().manual_seed(3))
    w, d = method.aggregate(G, Rows([0, 2], torch.tensor([0.5, 2.0]), 0, 0, 1, 6))
    assert d.shape == (6,) and torch.isfinite(d).all()
    if w is not None:
        assert w.shape == (2,) and torch.isfinite(w).all()
        assert torch.allclose(w @ G, d, atol=1e-6)
    assert not hasattr(method, "rows") and not hasattr(method, "row_losses")


@pytest.mark.parametrize("name", [n for n in NAMES if issubclass(WEIGHTINGS.get(n), LossTransform)])
def test_loss_transforms_sum_to_their_total_and_weights_are_derivatives(name):
    method = WEIGHTINGS.get(name)(TASKS, [1.0, 1.0, 1.0])
    losses = torch.tensor([0.5, 2.0, 3.0], requires_grad=True)
    total, w = method.combine(losses)
    assert torch.allclose(total, method.transform(losses).sum())
    (grad,) = torch.autograd.grad(total, losses)
    assert torch.allclose(w, grad, rtol=1e-6)
    present = torch.tensor([1.0, 0.0, 1.0])
    total_p, w_p = method.combine(losses, present)
    assert torch.allclose(total_p, (method.transform(losses) * present).sum()) and w_p[1] == 0


@pytest.mark.parametrize("transform", [n for n in NAMES if issubclass(WEIGHTINGS.get(n), LossTransform)])
def test_composed_uses_each_transform_with_its_own_code(transform):
    """``composed`` with each loss transform (and UPGrad as the aggregator) back-propagates the
    transformed losses through the transform's own code: the heads get the gradient of the
    transform's total."""
    torch.manual_seed(0)
    model = Net()
    method = WEIGHTINGS.get("composed")(TASKS, [1.0, 1.0, 1.0], transform=transform, aggregator={"name": "upgrad"})
    x, y = torch.randn(16, 5), torch.randn(16, 3)
    z, losses = model.losses(x, y)
    w = method.backward(
        losses,
        BackwardContext(model=model, backward=lambda t, inputs=None: t.backward(inputs=inputs), step=0, rep=z),
    )
    ref = Net()
    _, ref_losses = ref.losses(x, y)
    WEIGHTINGS.get(transform)(TASKS, [1.0, 1.0, 1.0]).transform(ref_losses).sum().backward()
    for t in TASKS:
        for p, q in zip(model.task_parameters(t), ref.task_parameters(t)):
            assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    assert torch.isfinite(w).all() and not math.isnan(float(w.sum()))
