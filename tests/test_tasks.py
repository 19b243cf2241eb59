"""Task kinds: masked losses and metrics on hand-made tensors with known answers, and the
TaskKind contract checked on every registered kind (a new kind is tested without editing a list)."""

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchmetrics.regression as tmr
import yaml

import mtl_cli.cli.predict as pr
from mtl_cli.config.checks import Problems
from mtl_cli.config.locate import builtin_config_dir
from mtl_cli.data.base import DataSpec, TargetSpec
from mtl_cli.data.sources.shapes import ShapesSource
from mtl_cli.registry import HEADS, TASK_KINDS
from mtl_cli.tasks.base import HIGHER, LOWER, THRESHOLD, Decoding, MetricDef, Task, TaskKind, masked_mean
from mtl_cli.train.evaluate import Selector
from mtl_cli.validation.tasks import check_tasks


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


# ---------------------------------------------------------------- the contract, on every kind
KINDS = TASK_KINDS.names()
N = 12  # samples of the example batches; sample 1 is unlabelled
HEAD_SLOTS = {"vector": {"name": "linear"}, "dense": {"name": "conv_decoder"}}
PLAIN = {"head": HEAD_SLOTS, "backbone": {"name": "small_cnn"}}  # what check_tasks reads of the config


@pytest.fixture(scope="module")
def shapes():
    """The shapes data (a target of every built-in target kind): its spec and a few samples."""
    src = ShapesSource(train_size=N, val_size=1, test_size=1, image_size=16)
    return src.describe(), src.load()["train"]


def accepted_target(kind: TaskKind, spec: DataSpec) -> TargetSpec:
    """The first target of ``spec`` a task of ``kind`` can learn (in the order of ``accepts``)."""
    ts = next((ts for a in kind.accepts for ts in spec.targets.values() if ts.kind == a), None)
    if ts is None:
        pytest.fail(
            f"kind {kind.name}: the shapes data has no target of a kind in {kind.accepts}; test it on data that has"
        )
    return ts


def example(name: str, shapes, task_name: str = "t", seed: int = 0, **kw):
    """A task of kind ``name`` on a shapes target it accepts, random predictions of the head's
    shape, the target's labels, and a mask leaving sample 1 unlabelled."""
    spec, data = shapes
    ts = accepted_target(TASK_KINDS.get(name)(), spec)
    task = make_task(name, ts, name=task_name, num_classes=ts.num_classes, ignore_index=ts.ignore_index, **kw)
    shape = (N, task.out_features, *ts.shape[-2:]) if task.kind.dense else (N, task.out_features)
    pred = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(N, dtype=torch.bool)
    mask[1] = False
    return task, pred, data.targets[ts.name][:N].clone(), mask


def with_filler(target: torch.Tensor, i: int) -> torch.Tensor:
    """``target`` with sample ``i`` replaced by a filler value (NaN, or out of range for integers)."""
    target = target.clone()
    target[i] = float("nan") if target.is_floating_point() else 99
    return target


def check_declared(kind: TaskKind, name: str) -> None:
    assert isinstance(kind, TaskKind) and kind.name == name
    assert kind.accepts and kind.losses and kind.default_loss in kind.losses
    assert kind.default_metrics and set(kind.default_metrics) <= set(kind.metrics)
    assert kind.default_primary in kind.default_metrics
    assert all(isinstance(m, MetricDef) and m.direction in (HIGHER, LOWER) for m in kind.metrics.values())
    assert HEADS.get(kind.default_head).dense_output == kind.dense
    assert isinstance(kind.needs_num_classes, bool)


def check_losses(name: str, shapes) -> None:
    """Every loss: a finite scalar with a finite gradient; the unlabelled sample's prediction and
    filler label change nothing; a batch without labels gives exactly 0 and a zero gradient."""
    for loss in TASK_KINDS.get(name).losses:
        task, pred, target, mask = example(name, shapes, loss=loss)
        pred.requires_grad_()
        value = task.loss(pred, target, mask)
        assert value.shape == () and torch.isfinite(value), (name, loss)
        (grad,) = torch.autograd.grad(value, pred)
        assert torch.isfinite(grad).all() and torch.count_nonzero(grad[1]) == 0, (name, loss)
        other = pred.detach().clone()
        other[1] = 1e3
        assert torch.allclose(task.loss(other, with_filler(target, 1), mask), value), (name, loss)
        none = task.loss(pred, target, torch.zeros_like(mask))
        assert none.item() == 0.0
        assert torch.count_nonzero(torch.autograd.grad(none, pred)[0]) == 0


def check_metrics(name: str, shapes) -> None:
    """Every metric constructs and gives a finite value on the labelled samples."""
    task, pred, target, mask = example(name, shapes, metrics=list(TASK_KINDS.get(name).metrics))
    metrics = task.make_metrics()
    assert set(metrics) == set(task.kind.metrics)
    for m in metrics.values():
        m.update(*task.kind.metric_inputs(task, pred, with_filler(target, 1), mask))
    for metric, m in metrics.items():
        value = m.compute()
        assert torch.isfinite(torch.as_tensor(value)).all(), (name, metric, value)


def check_decode(name: str, shapes, folder) -> None:
    """decode gives one JSON-serialisable record per sample, which mtl-predict writes as CSV
    columns and JSONL objects; files it names exist; summary says something about each."""
    task, pred, _, _ = example(name, shapes)
    out = Decoding({}, [f"in{i}" for i in range(N)], None, pr.MaskWriter(folder / "p_masks"))
    records = task.decode(pred.to(torch.bfloat16).requires_grad_(), out)  # any dtype, with a graph
    assert len(records) == N and all(isinstance(r, dict) and r for r in records)
    rows = [{"input": f"in{i}", task.name: r} for i, r in enumerate(records)]
    pr.write_records(rows, folder / "p.csv")
    pr.write_records(rows, folder / "p.jsonl")
    assert [json.loads(ln) for ln in (folder / "p.jsonl").read_text().splitlines()] == rows
    with open(folder / "p.csv", newline="") as f:
        written = list(csv.DictReader(f))
    for row, rec in zip(written, rows):
        cols = pr.columns(rec)
        assert len(cols) > 1 and row == {k: str(v) for k, v in cols.items()}
        for v in cols.values():
            if isinstance(v, str) and v.startswith(str(folder)):
                assert Path(v).is_file(), v
    for r in records:
        text = task.kind.summary(task, r)
        assert isinstance(text, str) and text
    assert task.kind.summary(task, records[0]) in pr.preview(rows, [task])


def check_num_classes(name: str, shapes) -> None:
    """needs_num_classes is true exactly when the head's size needs ``num_classes``, and then
    (only then) validation asks for it when the data does not say."""
    spec, _ = shapes
    kind = TASK_KINDS.get(name)()
    ts = dataclasses.replace(accepted_target(kind, spec), num_classes=None, class_names=None)
    task = make_task(name, ts)
    try:
        size = kind.out_features(task)
        sized = isinstance(size, int) and size >= 1
    except (TypeError, ValueError):
        sized = False
    assert kind.needs_num_classes == (not sized), name
    specs = {"data": DataSpec(inputs=spec.inputs, targets={ts.name: ts})}
    p = Problems()
    check_tasks(p, {"t": {"kind": name, "target": ts.name}}, specs, PLAIN)
    asked = [q for q in p.items if q.key == "tasks.t.num_classes"]
    assert bool(asked) == kind.needs_num_classes, (name, p.items)
    p = Problems()
    resolved = check_tasks(p, {"t": {"kind": name, "target": ts.name, "num_classes": 3}}, specs, PLAIN)
    assert not p.items and resolved["t"]["num_classes"] == 3


def check_fused(name: str, shapes) -> None:
    """Tasks the kind fuses get the losses of one call each."""
    (a, pa, y, mask), (b, pb, _, _) = example(name, shapes, "a"), example(name, shapes, "b", seed=1)
    if a.kind.fuse_key(a) is None or a.kind.fuse_key(a) != b.kind.fuse_key(b):
        return
    fused = a.kind.fused_loss([a, b], [pa, pb], [y, y], [mask, ~mask])
    assert torch.allclose(fused, torch.stack([a.loss(pa, y, mask), b.loss(pb, y, ~mask)]), atol=1e-6)


def check_contract(name: str, shapes, folder) -> None:
    check_declared(TASK_KINDS.get(name)(), name)
    check_losses(name, shapes)
    check_metrics(name, shapes)
    check_fused(name, shapes)
    check_num_classes(name, shapes)
    check_decode(name, shapes, folder)


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_keeps_the_task_kind_contract(name, shapes, tmp_path):
    check_contract(name, shapes, tmp_path)


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_has_its_preset(name):
    """The other half of a kind: ``conf/task/<name>.yaml`` (``/task@<task>: <name>`` in task sets)."""
    preset = yaml.safe_load((builtin_config_dir() / "task" / f"{name}.yaml").read_text())
    assert preset["kind"] == name and "base" in preset["defaults"]


def test_generic_code_never_names_a_kind():
    """Outside the kinds' own files (and the data, whose target kinds share the names), no code
    names a kind: it reads the contract, so a new kind needs no edit there."""
    import mtl_cli

    root = Path(mtl_cli.__file__).parent
    paths = [root / "build.py", root / "tasks" / "base.py"]
    paths += [p for d in ("cli", "validation", "train", "models") for p in (root / d).rglob("*.py")]
    for path in paths:
        code = path.read_text()
        for name in KINDS:
            assert f'"{name}"' not in code and f"'{name}'" not in code, (str(path.relative_to(root)), name)


# ---------------------------------------------------------------- a new kind is one file
NEW = "zz_test_ordinal"


class Ordinal(TaskKind):
    """Ordinal classification with cumulative logits (class k: the first k of C-1 logits > 0),
    written here as a kind's file would be: nothing else in the code names it."""

    name = NEW
    accepts = ("classification",)
    needs_num_classes = True
    losses = ("cumulative_bce",)
    default_loss = "cumulative_bce"
    metrics = {"rank_mae": MetricDef(lambda t: tmr.MeanAbsoluteError(), LOWER)}
    default_metrics = ("rank_mae",)
    default_primary = "rank_mae"

    def out_features(self, task: Task) -> int:
        return task.num_classes - 1

    def loss(self, task, pred, target, mask):
        k = torch.arange(task.num_classes - 1, device=pred.device)
        above = (target.clamp(0, task.num_classes - 1)[:, None] > k).float()
        return masked_mean(F.binary_cross_entropy_with_logits(pred.float(), above, reduction="none"), mask)

    def metric_inputs(self, task, pred, target, mask):
        return (pred[mask].float() > 0).sum(-1).float(), target[mask].float()

    def decode(self, task, pred, out):
        names = out.class_names(task)
        ranks = (pred.sigmoid() >= THRESHOLD).sum(-1).tolist()
        return [{"label": names[r], "rank": r} for r in ranks]

    def summary(self, task, record):
        return f"{record['label']} (rank {record['rank']})"


@pytest.fixture
def new_kind():
    TASK_KINDS.names()  # the built-in kinds are loaded first
    TASK_KINDS.register(NEW)(Ordinal)
    try:
        yield Ordinal
    finally:
        TASK_KINDS._items.pop(NEW, None)


def test_a_new_kind_registered_at_test_time_keeps_the_contract(new_kind, shapes, tmp_path):
    check_contract(NEW, shapes, tmp_path)


def test_a_new_kind_flows_through_validation_model_and_predict(new_kind, tmp_path, capsys):
    """Validated from a config, built, trained one step and predicted by mtl-predict's code with
    no other change: one file (plus, for task sets, one preset YAML) makes a kind."""
    from test_resume import BASE

    from mtl_cli.build import build_model, build_tasks
    from mtl_cli.config.compose import compose
    from mtl_cli.errors import ConfigError
    from mtl_cli.tasks.base import LossComputer
    from mtl_cli.validation import validate

    base = [o for o in BASE if not o.startswith("tasks.")] + ["tasks=none"]
    plan = validate(compose(base + [f"+tasks.rank.kind={NEW}", "+tasks.rank.target=shape"]))
    t = plan.tasks["rank"]
    assert (t["loss"], t["metrics"], t["primary_metric"], t["num_classes"]) == (
        "cumulative_bce",
        ["rank_mae"],
        "rank_mae",
        4,
    )
    assert t["directions"] == {"rank_mae": LOWER} and t["head"]["name"] == "linear"
    with pytest.raises(ConfigError) as e:  # the kind's own rules are enforced: targets, losses, metrics
        validate(compose(base + [f"+tasks.rank.kind={NEW}", "+tasks.rank.target=size", "+tasks.rank.metrics=[f1]"]))
    text = e.value.render()
    assert f"a {NEW} task cannot learn target 'size', which is regression" in text
    assert f"not a metric of a {NEW} task" in text and "allowed: rank_mae" in text
    tasks = build_tasks(plan)
    model = build_model(plan, tasks)
    data = plan.source.load()["train"]
    x, y = data.inputs["image"][:8], data.targets["shape"][:8]
    preds = model({"image": x})
    assert preds["rank"].shape == (8, 3)
    losses = LossComputer(tasks)(preds, {"shape": y}, {"shape": torch.ones(8, dtype=torch.bool)})
    losses.sum().backward()
    assert torch.isfinite(losses).all() and any(q.grad.abs().sum() > 0 for q in model.heads["rank"].parameters())

    from types import SimpleNamespace

    from PIL import Image

    (tmp_path / "in").mkdir()
    for i in range(3):
        Image.fromarray((x[i] * 255).round().byte().permute(1, 2, 0).numpy()).save(tmp_path / "in" / f"im{i}.png")
    model.eval()
    run = SimpleNamespace(
        plan=plan,
        artifacts=lambda d: {},
        tasks=tasks,
        model=model,
        device="cpu",
        autocast=lambda: torch.autocast("cpu", enabled=False),
        run_dir=tmp_path,
    )
    records = pr.predict_run(run, sorted((tmp_path / "in").iterdir()))
    with torch.no_grad():
        want = (model({"image": (x[:3] * 255).round() / 255})["rank"].sigmoid() >= THRESHOLD).sum(-1).tolist()
    names = plan.spec.targets["shape"].class_names
    assert [r["rank"] for r in records] == [{"label": names[k], "rank": k} for k in want]
    pr.write_records(records, tmp_path / "p.csv")
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == "input,rank.label,rank.rank"
    assert f"{names[want[0]]} (rank {want[0]})" in pr.preview(records, tasks)


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


def test_dense_regression_decode_writes_a_16_bit_png_per_channel_and_counts_clipped_pixels(tmp_path):
    import numpy as np
    from PIL import Image

    t = make_task("dense_regression", TargetSpec("t", "dense_regression", (2, 2, 2)), name="depth")
    pred = torch.tensor([[[[0.0, 0.5], [1.0, 2.0]], [[-1.0, 0.25], [0.75, 1.0]]]])  # 1 sample, 2 channels
    out = Decoding({}, ["a"], [(4, 4)], pr.MaskWriter(tmp_path))
    (rec,) = t.decode(pred, out)
    assert rec == {"map": [str(tmp_path / "a_depth_0.png"), str(tmp_path / "a_depth_1.png")]}
    png = np.array(Image.open(rec["map"][1])).astype(np.int64)
    assert png.shape == (4, 4) and png[0, 0] == 0 and png[0, -1] == round(0.25 * 65535) and png[-1, -1] == 65535
    assert out.warnings == {"pixel value(s) of depth outside [0, 1] were clipped in its 16-bit PNGs": 2}
    assert t.kind.summary(t, rec) == "a_depth_0.png"


def test_regression_decode_maps_values_back_with_the_recorded_scaling():
    t = make_task("regression", TargetSpec("pos", "regression", (2,)), name="p")
    t.target, t.dataset = "other/pos", "other"  # a task of another dataset: artifacts use the own name
    out = Decoding({"target_scaling": {"pos": {"mean": [1.0, -1.0], "std": [2.0, 10.0]}}}, ["a"], None, None)
    assert t.decode(torch.tensor([[0.5, 0.25]]), out) == [{"value": [2.0, 1.5]}]
    assert t.kind.summary(t, {"value": [2.0, 1.5]}) == "2, 1.5"


def test_class_names_prefer_the_label_map_then_the_datas_names_then_indices():
    t = make_task("classification", TargetSpec("c", "classification", (), 2, ["a", "b"]), name="c", num_classes=2)
    assert Decoding({}, [], None, None).class_names(t) == ["a", "b"]
    assert Decoding({"label_maps": {"c": {"yes": 1, "no": 0}}}, [], None, None).class_names(t) == ["no", "yes"]
    assert Decoding({"label_maps": {"c": {"x": 0}}}, [], None, None).class_names(t) == ["a", "b"]  # wrong size
    t.spec = TargetSpec("c", "classification", (), 2)
    assert Decoding({}, [], None, None).class_names(t) == ["0", "1"]
