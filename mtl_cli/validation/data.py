"""The data sources (``data`` and ``datasets.*``): each constructed and described, nothing loaded;
their specs merged under qualified names (:func:`mtl_cli.data.base.qualify`)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..config.checks import Problems, check_component
from ..data.base import PRIMARY, DataSource, DataSpec, available_memory_bytes, qualify
from ..errors import Problem, UserError
from ..registry import SOURCES


def check_datasets(p: Problems, plain: dict) -> tuple[dict[str, DataSource], dict[str, DataSpec]]:
    """The `data` source and every source under `datasets`, each described (nothing loaded)."""
    sources, specs = {}, {}
    nodes = {PRIMARY: plain.get("data")}
    extra = plain.get("datasets") or {}
    if not isinstance(extra, dict):
        p.add(
            "datasets",
            "expected a mapping of dataset names to data sources",
            extra,
            fix="e.g. in an experiment's defaults: `- /data@datasets.audio: tones`",
        )
        extra = {}
    for name, node in extra.items():
        if name == PRIMARY or "/" in str(name):
            p.add(
                f"datasets.{name}",
                "reserved or invalid dataset name",
                name,
                allowed="a name other than 'data', without '/'",
                fix="rename the dataset",
            )
            continue
        nodes[str(name)] = node
    plain["datasets"] = extra
    for name, node in nodes.items():
        src, spec = check_data(p, "data" if name == PRIMARY else f"datasets.{name}", node)
        if src is not None:
            sources[name], specs[name] = src, spec
    check_memory(p, sources)
    return sources, specs


def check_memory(p: Problems, sources: dict[str, DataSource]) -> None:
    """Sources that generate or decode everything into memory must fit in the memory available:
    refused here, before anything is allocated (a size typo would otherwise swap or crash)."""
    need: dict[str, int] = {}
    for n, s in sources.items():
        b = s.estimated_bytes()
        if b is not None:
            need[n] = b
    have = available_memory_bytes()
    if not need or have is None or sum(need.values()) <= 0.8 * have:
        return
    where = [n if n == PRIMARY else f"datasets.{n}" for n in need]
    p.add(
        where[0] if len(where) == 1 else "data",
        f"the data needs about {sum(need.values()) / 2**30:,.1f} GiB of memory to build, more than the "
        f"{0.8 * have / 2**30:,.1f} GiB this machine can give (80% of what is available now)",
        ", ".join(f"{w}: {b / 2**30:,.1f} GiB" for w, b in zip(where, need.values())),
        fix="lower the data's sizes (e.g. data.train_size, data.image_size or data.length)",
    )


def merge_specs(specs: dict[str, DataSpec]) -> DataSpec | None:
    """One spec over every dataset, inputs and targets under their qualified names."""
    if PRIMARY not in specs and not specs:
        return None
    inputs, targets = {}, {}
    artifacts = dict(specs[PRIMARY].artifacts) if PRIMARY in specs else {}
    for d, spec in specs.items():
        for k, v in spec.inputs.items():
            inputs[qualify(d, k)] = dataclasses.replace(v, name=qualify(d, k))
        for k, v in spec.targets.items():
            targets[qualify(d, k)] = dataclasses.replace(v, name=qualify(d, k))
        if d != PRIMARY and spec.artifacts:
            artifacts.setdefault("datasets", {})[d] = spec.artifacts
    return DataSpec(inputs, targets, artifacts)


def check_data(p: Problems, where: str, node: Any) -> tuple[DataSource | None, DataSpec | None]:
    n_before = len(p.items)
    cls = check_component(p, where, node, SOURCES)
    if cls is None or len(p.items) > n_before or any(k.startswith(f"{where}.") for k in p.unset):
        return None, None  # reported already (an unset ??? value would only confuse the source)

    def rekey(key: str | None) -> str:  # sources name their keys data.<key>
        if not key:
            return where
        return where + key[len("data") :] if key == "data" or key.startswith("data.") else key

    def retext(text):  # ... and their fixes say "set data.<key>=..."
        return re.sub(r"(?<![\w.])data\.", f"{where}.", text) if isinstance(text, str) else text

    try:
        source = cls(**{k: v for k, v in node.items() if k != "name"})
        return source, source.describe()
    except UserError as e:
        p.items.extend(
            Problem(rekey(q.key), retext(q.message), q.value, retext(q.allowed), retext(q.fix)) for q in e.problems
        )
    except (ValueError, TypeError) as e:
        p.add(where, f"the {node['name']} source refuses its arguments: {e}", fix="fix the named value")
    return None, None
