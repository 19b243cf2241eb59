"""Settings of the run as a whole: the device, the monitored metric, sweep objectives, baselines
for Δm and optional packages."""

from __future__ import annotations

from typing import Any

from ..config.checks import Problems
from ..results.baselines import baseline_problems


def check_processes(p: Problems, plain: dict) -> None:
    """The data-parallel settings against this machine: NCCL needs CUDA; ``trainer.devices=N``
    on GPUs needs N of them (on CPUs, N processes share the cores)."""
    import torch

    t = plain["trainer"]
    cuda = torch.cuda.is_available() and plain.get("device", "auto") in ("auto", "cuda")
    if t.get("dist_backend") == "nccl" and not torch.cuda.is_available():
        p.add(
            "trainer.dist_backend",
            "NCCL needs CUDA GPUs, and this machine has none",
            "nccl",
            allowed="auto or gloo on CPUs",
            fix="set trainer.dist_backend=auto (gloo on CPUs)",
        )
    devices = t.get("devices")
    if isinstance(devices, int) and cuda and devices > torch.cuda.device_count():
        n = torch.cuda.device_count()
        p.add(
            "trainer.devices",
            f"this machine has {n} CUDA device{'s' if n != 1 else ''}",
            devices,
            allowed=f"1 to {n}, or auto",
            fix=f"set trainer.devices to at most {n} (more machines: torchrun --nnodes, docs/distributed.md)",
        )


def check_device(p: Problems, plain: dict) -> None:
    import torch

    dev = plain.get("device", "auto")
    if not isinstance(dev, str):
        return
    ok = dev == "auto" or dev == "cpu" or dev == "mps" or dev == "cuda" or dev.startswith("cuda:")
    if ok and dev.startswith("cuda:"):
        ok = dev[len("cuda:") :].isdigit()
    if not ok:
        p.add(
            "device",
            "unknown device",
            dev,
            allowed="auto, cpu, cuda, cuda:<i>, mps",
            fix="set device to one of the allowed values (auto picks cuda > mps > cpu)",
        )
        return
    if dev.startswith("cuda") and not torch.cuda.is_available():
        p.add("device", "CUDA is not available on this machine", dev, fix="use device=auto or device=cpu")
    elif dev.startswith("cuda:") and int(dev[len("cuda:") :]) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        p.add(
            "device",
            f"this machine has {n} CUDA device{'s' if n != 1 else ''}",
            dev,
            allowed=", ".join(["cuda"] + [f"cuda:{i}" for i in range(n)]),
            fix="choose an existing device",
        )
    cuda = dev.startswith("cuda") or (dev == "auto" and torch.cuda.is_available())
    if plain["trainer"].get("precision") == "fp16" and not cuda:
        p.add(
            "trainer.precision",
            "fp16 mixed precision needs a CUDA device",
            "fp16",
            allowed="32 or bf16 on this device",
            fix="use trainer.precision=bf16 or 32",
        )


def check_monitor(p: Problems, monitor: Any, tasks: dict[str, dict]) -> None:
    if not isinstance(monitor, str) or monitor in ("mean_rel", "delta_m") or not tasks:
        return  # delta_m: check_baseline
    allowed = ["mean_rel", "delta_m"] + [f"{n}/{m}" for n, t in tasks.items() for m in t["metrics"]]
    if monitor not in allowed:
        p.add(
            "trainer.monitor",
            "not a metric of an enabled task",
            monitor,
            allowed=", ".join(allowed),
            fix="set trainer.monitor to mean_rel, delta_m (with baseline_dir) or one of the allowed <task>/<metric>",
        )


def check_tensorboard(p: Problems, logger: dict) -> None:
    """The logger's backends (``logger.tensorboard=true`` and each ``logger.backends.<name>``): the
    keys of each (its class's signature, value domains included) and the packages it needs,
    installed; a missing one is named with its pip extra. (Unknown names are the schema's problem.)"""
    import difflib
    import importlib.util

    from ..config.checks import check_keys
    from ..config.schema import LOGGER_BACKENDS
    from ..config.typecheck import config_params

    wanted: list[tuple[str, Any, str, str]] = []  # (key, value, backend name, how to turn it off)
    if logger.get("tensorboard") is True:
        wanted.append(("logger.tensorboard", True, "tensorboard", "set logger.tensorboard=false"))
    backends = logger.get("backends")
    for name, node in (backends if isinstance(backends, dict) else {}).items():
        key = f"logger.backends.{name}"
        if name not in LOGGER_BACKENDS:
            close = difflib.get_close_matches(str(name), LOGGER_BACKENDS.names(), n=1)
            p.add(
                key,
                "unknown logger backend",
                allowed=", ".join(LOGGER_BACKENDS.names()),
                fix=f"did you mean logger.backends.{close[0]}?" if close else f"remove {key}",
            )
            continue
        if not isinstance(node, dict):
            continue  # null: off (anything else: the schema's problem)
        check_keys(p, key, node, config_params(LOGGER_BACKENDS.get(name)))
        wanted.append((key, name, name, f"remove it (logger.backends.{name}=null)"))
    for key, value, name, off in wanted:
        cls = LOGGER_BACKENDS.get(name)
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            pkgs = ", ".join(missing)
            p.add(
                key,
                f"{cls.needs} the {pkgs} package{'s' if len(missing) > 1 else ''}, which "
                f"{'are' if len(missing) > 1 else 'is'} not installed",
                value,
                allowed=f"with {pkgs} installed",
                fix=f'pip install "mtl-cli[{cls.extra}]" (or pip install {" ".join(missing)}), or {off}',
            )


def check_objectives(p: Problems, objectives: Any, tasks: dict[str, dict]) -> None:
    """``objectives`` (what a sweep optimizes): null, or distinct ``<task>/<metric>`` of enabled tasks."""
    if objectives is None or not isinstance(objectives, list) or not tasks:
        return  # not a list: the schema check reports it
    allowed = [f"{n}/{m}" for n, t in tasks.items() for m in t["metrics"]]
    if not objectives:
        p.add(
            "objectives",
            "an empty list",
            [],
            allowed="null (the selection score) or a list of <task>/<metric>",
            fix="set objectives=null, or list the val metrics to optimize, e.g. objectives=[shape/accuracy]",
        )
    for i, o in enumerate(objectives):
        if o not in allowed:
            p.add(
                f"objectives[{i}]",
                "not a metric of an enabled task",
                o,
                allowed=", ".join(allowed),
                fix="name each objective as <task>/<metric> of an enabled task",
            )
        elif objectives.index(o) != i:
            p.add(f"objectives[{i}]", "given twice", o, fix="list each objective once")


def check_baseline(p: Problems, plain: dict, tasks: dict[str, dict]) -> None:
    """``baseline_dir`` must hold baselines.json covering every enabled primary task with its
    metrics; ``trainer.monitor=delta_m`` needs it. (``baseline=stl`` runs pick their own monitor
    and need no baselines.)"""

    if plain.get("baseline") == "stl":
        return
    bdir = plain.get("baseline_dir")
    if plain["trainer"].get("monitor") == "delta_m" and bdir in (None, ""):
        p.add(
            "trainer.monitor",
            "delta_m selects by Δm against single-task baselines, but baseline_dir is not set",
            "delta_m",
            allowed="delta_m with baseline_dir=<a baseline=stl run>; mean_rel; <task>/<metric>",
            fix="train the baselines with mtl-train baseline=stl run_dir=<dir> <the same data/backbone/task "
            "overrides>, then add baseline_dir=<dir>; or choose another trainer.monitor",
        )
    if bdir not in (None, "") and tasks:
        p.items.extend(baseline_problems(bdir, tasks))
