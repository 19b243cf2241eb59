"""Shared representation across inputs ("multi-input" MTL): each task, or group of tasks, reads
its own input, possibly from its own dataset, of its own shape or modality, through its own
*stem*; a projection maps every stem's output into one representation space; the configured
``backbone`` then runs as layers shared by every input, and the task heads follow.

This is the shared-representation family of Caruana (1997, "Multitask Learning") and Ruder
(2017, "An Overview of Multi-Task Learning in Deep Neural Networks"), as used when tasks come
from different datasets or modalities, e.g. the image and audio encoders of Ngiam et al. (2011,
"Multimodal Deep Learning") feeding shared layers.

- ``stems``: a backbone node per *dataset name* (``data`` is the primary one) or per
  *modality* (image, signal, tabular); the dataset entry wins. Every input gets its own stem
  (its own parameters), even when two inputs use the same entry.
- ``join``: ``map`` keeps spatial maps (every stem must give maps of one kind; channels are
  projected with a 1x1 conv to ``width``), so the shared backbone can be convolutional: two image
  inputs then pass through the same convolution kernels. ``vector`` pools each stem's output and
  projects it linearly to ``width``; the shared backbone then reads vectors (e.g. ``mlp``), which
  is how an image and a signal meet. ``auto``: ``map`` when every input is of one modality and
  every stem gives maps, else ``vector``.

- ``norm_per_input`` (default true): the shared layers keep batch-norm running statistics per
  input while their weights stay shared. Batches come from one dataset at a time, so without it
  each input is evaluated with statistics averaged over every input, which costs accuracy when
  the inputs differ (on ``two_inputs`` it cost 10 points of accuracy; docs/architectures.md).

``encode`` returns ``{input key: shared features}`` for the inputs present in the batch, and
``decode`` predicts the tasks that read them, so a batch from one dataset trains its own tasks.
Parameters: the shared backbone is shared; a stem (with its projection) belongs to its task when
one task reads that input, and to the shared group when several do.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Literal, get_args

from torch import Tensor, nn

from ...config.params import PosInt
from ...data.base import InputSpec
from ...errors import Problem
from ...registry import ARCHS, BACKBONES
from ..base import ArchInfo, HeadRunner, ModelContext, MTLModel, pool, pooled_dim
from ..staged import channels, per_input_norms, pointwise

Join = Literal["auto", "map", "vector"]
JOINS = get_args(Join)


def _dataset_of(input_key: str) -> str:
    return input_key.split("/", 1)[0] if "/" in input_key else "data"


def _stem_node(stems: dict, input_key: str, spec: InputSpec) -> tuple[str, dict | None]:
    for k in (_dataset_of(input_key), spec.modality):
        if k in stems:
            return k, stems[k]
    return "", None


class _Pool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return pool(x)


@ARCHS.register("multi_input")
class MultiInput(MTLModel):
    single_input = False
    shared_representation = False  # one shared-layer output per input (encode returns a dict)

    def __init__(
        self,
        ctx: ModelContext,
        *,
        stems: dict[str, dict] | None = None,  # each a backbone node, checked by check()
        join: Join = "auto",
        width: PosInt | None = None,
        norm_per_input: bool = True,
    ):
        super().__init__([t.name for t in ctx.tasks])
        stems = dict(stems or {})
        self.input_keys = list(dict.fromkeys(t.input for t in ctx.tasks))
        self.readers = {k: [t.name for t in ctx.tasks if t.input == k] for k in self.input_keys}
        self.slot = {k: f"in{i}" for i, k in enumerate(self.input_keys)}  # ModuleDict-safe names
        built, shapes = {}, {}
        for k in self.input_keys:
            spec = ctx.inputs[k]
            _, node = _stem_node(stems, k, spec)
            if node is None:
                raise ValueError(f"arch.stems has no entry for input {k!r} (modality {spec.modality})")
            built[k] = ctx.make_backbone(spec, node)
            shapes[k] = tuple(built[k].out_shape)
        self.join = _resolve_join(
            join, [ctx.inputs[k].modality for k in self.input_keys], [len(s) >= 2 for s in shapes.values()]
        )
        if self.join == "map" and len({len(s) for s in shapes.values()}) > 1:
            raise ValueError("join=map needs stems that all give image maps or all give signal maps")
        self.width = width or max(channels(s) if self.join == "map" else pooled_dim(s) for s in shapes.values())
        self.stems = nn.ModuleDict({self.slot[k]: built[k] for k in self.input_keys})
        self.proj = nn.ModuleDict({self.slot[k]: self._projection(shapes[k]) for k in self.input_keys})
        first = shapes[self.input_keys[0]]
        rep_shape = (self.width, *first[1:]) if self.join == "map" else (self.width,)
        modality = {3: "image", 2: "signal"}.get(len(rep_shape), "tabular")
        self.shared = ctx.make_backbone(InputSpec("shared", rep_shape, modality))
        n = len(self.input_keys)
        self._norms = per_input_norms(self.shared, n) if norm_per_input and n > 1 else []
        self.heads = nn.ModuleDict({t.name: ctx.make_head(t, tuple(self.shared.out_shape)) for t in ctx.tasks})
        self.runners = {
            k: HeadRunner(nn.ModuleDict({n: self.heads[n] for n in self.readers[k]})) for k in self.input_keys
        }

    def _projection(self, shape: tuple[int, ...]) -> nn.Module:
        if self.join == "map":
            c = channels(shape)
            return nn.Identity() if c == self.width else pointwise(c, self.width, shape)
        d = pooled_dim(shape)
        return nn.Sequential(_Pool(), nn.Identity() if d == self.width else nn.Linear(d, self.width))

    def encode(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for i, k in enumerate(self.input_keys):
            if k in inputs:
                for m in self._norms:
                    m.index = i
                out[k] = self.shared(self.proj[self.slot[k]](self.stems[self.slot[k]](inputs[k])))
        return out

    def decode(self, rep: dict[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for k, r in rep.items():
            out |= self.runners[k](r)
        return {n: out[n] for n in self.task_names if n in out}

    def _stem_params(self, k: str) -> list[nn.Parameter]:
        return [*self.stems[self.slot[k]].parameters(), *self.proj[self.slot[k]].parameters()]

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.shared.parameters()
        for k in self.input_keys:
            if len(self.readers[k]) > 1:
                yield from self._stem_params(k)

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from self.heads[task].parameters()
        for k in self.input_keys:
            if self.readers[k] == [task]:
                yield from self._stem_params(k)

    @classmethod
    def check(cls, node: dict, info: ArchInfo) -> list:
        from ...config.checks import component_problems

        out: list[Problem] = []
        stems = node.get("stems") or {}
        join = node.get("join", "auto")
        if not isinstance(stems, dict) or not all(isinstance(v, dict) for v in stems.values()) or join not in JOINS:
            return out  # a wrong type or value: the annotations report it
        for k, sub in stems.items():
            out += component_problems(f"arch.stems.{k}", sub, BACKBONES)
        if out:
            return out
        stem_classes = []
        for k, spec in info.inputs.items():
            entry, sub = _stem_node(stems, k, spec)
            if sub is None:
                out.append(
                    Problem(
                        "arch.stems",
                        f"no stem for input {k!r} of dataset {_dataset_of(k)!r} (modality {spec.modality})",
                        sorted(stems),
                        f"an entry named {_dataset_of(k)!r} or {spec.modality!r}",
                        f"add arch.stems.{spec.modality}: {{name: <backbone>, ...}}",
                    )
                )
                continue
            cls_ = BACKBONES.get(sub["name"])
            if spec.modality not in cls_.modalities:
                fits = [n for n in BACKBONES.names() if spec.modality in BACKBONES.get(n).modalities]
                out.append(
                    Problem(
                        f"arch.stems.{entry}.name",
                        f"stem {sub['name']} reads {', '.join(cls_.modalities)}"
                        f" inputs, but input {k!r} is {spec.modality}",
                        sub["name"],
                        ", ".join(fits),
                        f"add an entry arch.stems.{_dataset_of(k)} for this dataset's own stem",
                    )
                )
            else:  # the stem's own rules on its input, under the stem's key
                out += [_rekey(q, f"arch.stems.{entry}") for q in cls_.check(sub, spec)]
            stem_classes.append(cls_)
        if out:
            return out
        modalities = [s.modality for s in info.inputs.values()]
        resolved = _resolve_join(join, modalities, [c.feature_map for c in stem_classes])
        bb_cls = BACKBONES.get(info.backbone)
        rep_modality = modalities[0] if resolved == "map" else "tabular"
        if rep_modality not in bb_cls.modalities:
            allowed = ", ".join(n for n in BACKBONES.names() if rep_modality in BACKBONES.get(n).modalities)
            what = (
                "vectors (inputs of different modalities, or stems without maps)"
                if resolved == "vector"
                else f"{rep_modality} maps"
            )
            out.append(
                Problem(
                    "backbone.name",
                    f"with arch.join={join} the shared layers read {what}, which backbone {info.backbone} cannot",
                    info.backbone,
                    allowed,
                    "choose an allowed backbone for the shared layers (backbone=mlp reads vectors)",
                )
            )
        if resolved == "map" and not all(c.feature_map for c in stem_classes):
            out.append(
                Problem(
                    "arch.join",
                    "join=map needs every stem to give a feature map",
                    join,
                    "auto, vector",
                    "set arch.join=auto",
                )
            )
        elif resolved == "map" and len(set(modalities)) > 1:
            out.append(
                Problem(
                    "arch.join",
                    "join=map needs inputs of one modality (maps of one kind), but they are "
                    + ", ".join(sorted(set(modalities))),
                    join,
                    "auto, vector",
                    "set arch.join=auto (vector: each stem's output pooled, then shared layers such as backbone=mlp)",
                )
            )
        return out


def _rekey(q: Problem, where: str) -> Problem:
    """A backbone's problem (``backbone.<key>``) about a stem (``arch.stems.<entry>.<key>``)."""
    key = where + q.key[len("backbone") :] if q.key == "backbone" or q.key.startswith("backbone.") else q.key
    allowed, fix = (t.replace("backbone.", f"{where}.") if isinstance(t, str) else t for t in (q.allowed, q.fix))
    return dataclasses.replace(q, key=key, allowed=allowed, fix=fix)


def _resolve_join(join: str, modalities: list[str], maps: list[bool]) -> str:
    if join != "auto":
        return join
    return "map" if len(set(modalities)) == 1 and all(maps) else "vector"
