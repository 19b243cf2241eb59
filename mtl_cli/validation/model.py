"""Rules between the architecture, the backbone and the tasks' inputs; then the architecture's
own ``check``."""

from __future__ import annotations

from ..config.checks import Problems
from ..data.base import DataSpec
from ..errors import UserError
from ..models.base import ArchInfo
from ..registry import ARCHS, BACKBONES


def check_arch(p: Problems, arch_cls, plain: dict, tasks: dict[str, dict], spec: DataSpec | None) -> None:
    """Rules between the architecture, the backbone and the tasks' inputs; then the arch's own check."""

    arch = plain["arch"]["name"]
    if any(t.get("input_key") is None for t in tasks.values()):
        return  # a dataset or input problem is reported already
    input_keys = list(dict.fromkeys(t["input_key"] for t in tasks.values()))
    if arch_cls.single_input and len(input_keys) > 1:
        where = sorted({f"{t['dataset']}:{t['input']}" for t in tasks.values()})
        p.add(
            "tasks.*.input",
            f"arch={arch} feeds every task from one shared input, but the tasks read several inputs (dataset:input)",
            where,
            allowed=", ".join(n for n in ARCHS.names() if not ARCHS.get(n).single_input),
            fix="give every task the same dataset and input, or choose a multi-input architecture (arch=multi_input)",
        )
        return
    bb = plain.get("backbone") or {}
    bb_cls = BACKBONES.get(bb["name"]) if bb.get("name") in BACKBONES else None
    if bb_cls is None or spec is None:
        return
    # a backbone key is wrong already: checking or building the backbone would only repeat that
    keys_ok = not any(q.key.split(".")[0] == "backbone" for q in p.items)
    if arch_cls.single_input:
        modality = spec.inputs[input_keys[0]].modality
        if modality not in bb_cls.modalities:
            p.add(
                "backbone.name",
                f"backbone {bb['name']} reads {', '.join(bb_cls.modalities)} inputs, but the tasks "
                f"read {input_keys[0]!r}, a {modality} input",
                bb["name"],
                allowed=", ".join(n for n in BACKBONES.names() if modality in BACKBONES.get(n).modalities),
                fix="choose one of the allowed backbones",
            )
            return
        if keys_ok:  # rules between the backbone's keys and its input (e.g. n_fft and the length)
            n0 = len(p.items)
            p.items.extend(bb_cls.check(bb, spec.inputs[input_keys[0]]))
            if len(p.items) > n0:
                return
    stages = None
    if arch_cls.needs_stages:
        if not bb_cls.has_stages:
            p.add(
                "backbone.name",
                f"arch={arch} works stage by stage, but backbone {bb['name']} cannot be cut into stages",
                bb["name"],
                allowed=", ".join(n for n in BACKBONES.names() if BACKBONES.get(n).has_stages),
                fix="choose one of the allowed backbones, or arch=hps",
            )
            return
        if not keys_ok:
            return
        stages = _stage_names(p, bb_cls, bb, spec.inputs[input_keys[0]])
        if stages is None:
            return
    info = ArchInfo(
        task_names=list(tasks), backbone=bb["name"], stages=stages, inputs={k: spec.inputs[k] for k in input_keys}
    )
    p.items.extend(arch_cls.check(plain["arch"], info))


def _stage_names(p: Problems, bb_cls, node: dict, input_spec) -> list[str] | None:
    """Build the backbone once on the tasks' input and read its stage names (None on a problem)."""
    try:
        return [n for n, _ in bb_cls(input_spec, **{k: v for k, v in node.items() if k != "name"}).stages()]
    except UserError as e:
        p.items.extend(e.problems)
    except Exception as e:  # noqa: BLE001 - any failure to build is a config problem here
        p.add(
            "backbone",
            f"backbone {node['name']} cannot be built on input {input_spec.name!r} "
            f"of shape {tuple(input_spec.shape)}: {type(e).__name__}: {e}",
            fix="fix the backbone's keys",
        )
    return None
