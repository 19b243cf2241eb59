"""Task kinds: masked losses and metrics on hand-made tensors with known answers."""

import math

import pytest
import torch
import torch.nn.functional as F

from mtl_cli.data.base import TargetSpec
from mtl_cli.registry import TASK_KINDS
from mtl_cli.tasks.base import Task
from mtl_cli.train.evaluate import Selector


def make_task(kind, spec, name="t", **kw):
    k = TASK_KINDS.get(kind)()
    return Task(
        name=name,
        kind=k,
        input="x",
        target=name,
        spec=spec,
        loss_name=kw.pop("loss", k.default_loss),
        metric_names=list(kw.pop("metrics", k.default_metrics)),
        primary_metric=k.default_primary,
        **kw,
    )


def test_registry_has_every_kind():
    assert TASK_KINDS.names() == [
        "binary",
        "classification",
        "dense_regression",
        "multilabel",
        "regression",
        "segmentation",
    ]


def test_classification_loss_ignores_unlabelled_samples():
    t = make_task("classification", TargetSpec("t", "classification", (), 3), num_classes=3)
    torch.manual_seed(0)
    pred = torch.randn(4, 3)
    target = torch.tensor([0, 2, 1, 1])
    mask = torch.tensor([True, True, False, True])
    expected = F.cross_entropy(pred[mask], target[mask])
    assert torch.allclose(t.loss(pred, target, mask), expected)
    # the unlabelled sample's filler value does not matter, even out of range
    target2 = target.clone()
    target2[2] = 99
    assert torch.allclose(t.loss(pred, target2, mask), expected)


def test_batch_without_labels_gives_zero_loss_and_zero_grad():
    t = make_task("classification", TargetSpec("t", "classification", (), 3), num_classes=3)
    pred = torch.randn(4, 3, requires_grad=True)
    loss = t.loss(pred, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(pred.grad) == 0


def test_regression_vector_masked_mse_with_nan_filler():
    t = make_task("regression", TargetSpec("t", "regression", (2,)))
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 3.0]])
    target = torch.tensor([[0.0, 0.0], [float("nan"), float("nan")], [3.0, 1.0]])
    mask = torch.tensor([True, False, True])
    # sample 0: mean((1,4)) = 2.5, sample 2: mean((0,4)) = 2.0 -> 2.25
    assert t.loss(pred, target, mask).item() == pytest.approx(2.25)


def test_binary_pos_weight_changes_positive_term():
    spec = TargetSpec("t", "binary", ())
    pred = torch.zeros(2, 1)
    target = torch.tensor([1.0, 0.0])
    mask = torch.ones(2, dtype=torch.bool)
    plain = make_task("binary", spec).loss(pred, target, mask).item()
    weighted = make_task("binary", spec, pos_weight=3.0).loss(pred, target, mask).item()
    assert plain == pytest.approx(math.log(2))
    assert weighted == pytest.approx((3 * math.log(2) + math.log(2)) / 2)


def test_segmentation_ignores_ignore_index_and_unlabelled_samples():
    t = make_task(
        "segmentation", TargetSpec("t", "segmentation", (2, 2), 3, ignore_index=255), num_classes=3, ignore_index=255
    )
    torch.manual_seed(1)
    pred = torch.randn(2, 3, 2, 2)
    target = torch.tensor([[[0, 1], [255, 2]], [[1, 1], [1, 1]]])
    mask = torch.tensor([True, False])
    ce = F.cross_entropy(pred[:1], target[:1], ignore_index=255, reduction="none")[0]
    expected = (ce[0, 0] + ce[0, 1] + ce[1, 1]) / 3
    assert t.loss(pred, target, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_dense_regression_skips_nan_pixels():
    t = make_task("dense_regression", TargetSpec("t", "dense_regression", (1, 2, 2)))
    pred = torch.ones(1, 1, 2, 2)
    target = torch.tensor([[[[0.0, float("nan")], [3.0, 1.0]]]])
    mask = torch.tensor([True])
    assert t.loss(pred, target, mask).item() == pytest.approx((1 + 2 + 0) / 3)
    metrics = t.make_metrics()
    p, y = t.kind.metric_inputs(t, pred, target, mask)
    for m in metrics.values():
        m.update(p, y)
    assert metrics["abs_err"].compute().item() == pytest.approx((1 + 2 + 0) / 3)  # errors at targets 0, 3, 1


def test_dense_relative_error_value():
    t = make_task("dense_regression", TargetSpec("t", "dense_regression", (1, 1, 2)))
    pred = torch.tensor([[[[2.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 4.0]]]])
    m = t.make_metrics()["rel_err"]
    m.update(*t.kind.metric_inputs(t, pred, target, torch.tensor([True])))
    assert m.compute().item() == pytest.approx((1 / 1 + 1 / 4) / 2)


def test_classification_metrics_only_count_labelled_samples():
    t = make_task("classification", TargetSpec("t", "classification", (), 2), num_classes=2)
    pred = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0], [0.0, 5.0]])
    target = torch.tensor([0, 1, 1, 0])  # last two would be wrong
    mask = torch.tensor([True, True, False, True])
    m = t.make_metrics()["accuracy"]
    m.update(*t.kind.metric_inputs(t, pred, target, mask))
    assert m.compute().item() == pytest.approx(2 / 3)


def test_multilabel_loss_and_accuracy():
    t = make_task("multilabel", TargetSpec("t", "multilabel", (3,), 3), num_classes=3)
    pred = torch.tensor([[10.0, -10.0, 10.0]])
    target = torch.tensor([[1.0, 0.0, 0.0]])
    mask = torch.tensor([True])
    assert t.loss(pred, target, mask).item() == pytest.approx(10 / 3, rel=1e-3)
    m = t.make_metrics()["accuracy"]
    m.update(*t.kind.metric_inputs(t, pred, target, mask))
    assert m.compute().item() == pytest.approx(2 / 3)


def test_selector_mean_rel_uses_distance_to_optimum():
    acc = make_task("classification", TargetSpec("a", "classification", (), 2), name="a", num_classes=2)
    mae = make_task("regression", TargetSpec("b", "regression", ()), name="b")
    sel = Selector("mean_rel", [acc, mae])
    s0, imp0 = sel.update({"a": {"accuracy": 0.5}, "b": {"mae": 2.0}}, epoch=1)
    assert (s0, imp0) == (0.0, True)
    # accuracy distance 0.5 -> 0.25 (-50%), mae 2.0 -> 1.5 (-25%): mean improvement 0.375
    s1, imp1 = sel.update({"a": {"accuracy": 0.75}, "b": {"mae": 1.5}}, epoch=2)
    assert s1 == pytest.approx(0.375) and imp1
    s2, imp2 = sel.update({"a": {"accuracy": 0.5}, "b": {"mae": 1.0}}, epoch=3)
    assert s2 == pytest.approx(0.25) and not imp2
    assert sel.best_epoch == 2


def test_selector_mean_rel_with_a_task_perfect_at_the_first_evaluation():
    acc = make_task("classification", TargetSpec("a", "classification", (), 2), name="a", num_classes=2)
    mae = make_task("regression", TargetSpec("b", "regression", ()), name="b")
    sel = Selector("mean_rel", [acc, mae])
    sel.update({"a": {"accuracy": 1.0}, "b": {"mae": 2.0}}, epoch=1)
    # a stays perfect (0), b halves its error (+0.5): the mean is 0.25
    assert sel.update({"a": {"accuracy": 1.0}, "b": {"mae": 1.0}}, epoch=2)[0] == pytest.approx(0.25)
    # a drops to 0.998: its term is clipped at -1 instead of -2e9, so b's progress still counts
    s3, _ = sel.update({"a": {"accuracy": 0.998}, "b": {"mae": 0.2}}, epoch=3)
    assert s3 == pytest.approx((-1.0 + 0.9) / 2)
    # a distance that more than doubles is clipped too
    assert sel.update({"a": {"accuracy": 1.0}, "b": {"mae": 9.0}}, epoch=4)[0] == pytest.approx(-0.5)


def test_selector_single_metric_direction():
    mae = make_task("regression", TargetSpec("b", "regression", ()), name="b")
    sel = Selector("b/mae", [mae])
    sel.update({"b": {"mae": 2.0}}, 1)
    sel.update({"b": {"mae": 1.0}}, 2)
    sel.update({"b": {"mae": 1.5}}, 3)
    assert sel.best_epoch == 2


def test_fused_losses_equal_per_task_losses():
    """LossComputer batches tasks of one kind; the result must equal one loss call per task."""
    from mtl_cli.tasks.base import LossComputer

    torch.manual_seed(0)
    b = 16
    tasks = [
        make_task("binary", TargetSpec(f"b{i}", "binary", ()), name=f"b{i}", pos_weight=2.0 if i == 1 else None)
        for i in range(3)
    ]
    tasks.insert(1, make_task("classification", TargetSpec("c0", "classification", (), 3), name="c0", num_classes=3))
    tasks.append(make_task("classification", TargetSpec("c1", "classification", (), 3), name="c1", num_classes=3))
    tasks.append(make_task("regression", TargetSpec("r0", "regression", ()), name="r0", loss="l1"))
    tasks.append(make_task("regression", TargetSpec("r1", "regression", ()), name="r1", loss="l1"))
    tasks.append(make_task("regression", TargetSpec("v", "regression", (2,)), name="v"))  # vector: not fused
    preds, targets, masks = {}, {}, {}
    for t in tasks:
        n_out = {"binary": 1, "classification": 3, "regression": t.out_features}[t.kind.name]
        preds[t.name] = torch.randn(b, n_out, requires_grad=True)
        if t.kind.name == "classification":
            targets[t.name] = torch.randint(0, 3, (b,))
        elif t.kind.name == "binary":
            targets[t.name] = (torch.rand(b) > 0.5).float()
        else:
            targets[t.name] = torch.randn(b, *t.spec.shape)
        masks[t.name] = torch.rand(b) > 0.3
    masks["r1"] = torch.zeros(b, dtype=torch.bool)  # a fused task without labels: exactly 0
    lc = LossComputer(tasks)
    assert sorted(len(g) for g in lc.groups) == [1, 2, 2, 3]
    fused = lc(preds, targets, masks)
    single = torch.stack([t.loss(preds[t.name], targets[t.name], masks[t.name]) for t in tasks])
    assert torch.allclose(fused, single, atol=1e-6)
    assert fused[tasks.index(next(t for t in tasks if t.name == "r1"))].item() == 0.0
    g_fused = torch.autograd.grad(fused.sum(), [preds[t.name] for t in tasks])
    g_single = torch.autograd.grad(single.sum(), [preds[t.name] for t in tasks])
    assert all(torch.allclose(a, c, atol=1e-6) for a, c in zip(g_fused, g_single))
