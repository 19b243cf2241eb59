"""``mtl-export``: a finished run's model as files other programs load without this package.

    mtl-export <run dir> [checkpoint=best|last|<file.pt>] [output=<folder>]
               [formats=safetensors,onnx,torch_export] [opset=18] [verify=true]

Writes into ``<run dir>/export/<checkpoint>/`` (or ``output``):

- ``model.safetensors``: every weight and buffer of the model (``safetensors.torch.load_file``
  reads it: no pickle, none of this package's classes), with ``config.yaml`` (the run's config),
  ``data.json`` (the run's label maps and statistics) and ``export.json`` (inputs, outputs, files)
  beside it; ``mtl-predict <export folder>`` and ``mtl-eval`` read such a folder as a run;
- ``model.onnx``: the model as an ONNX graph (``torch.onnx.export``, the dynamo exporter): one
  input per input key (``/`` becomes ``.``: ``outlines/image`` -> ``outlines.image``), one output
  per task, named like it, in task order; the batch axis of each input is dynamic;
- ``model.pt2``: the same function as a ``torch.export`` program (``torch.export.load``; call
  ``.module()(*inputs)``), with the same dynamic batch axes.

Outputs are the model's raw outputs, as ``model(inputs)`` gives them: logits for classification,
binary, multilabel and segmentation (apply softmax or sigmoid), values for regression and dense
regression. ``verify=true`` (the default) runs each exported file on a probe batch and compares it
with the model in PyTorch: ``|exported - eager| <= atol + rtol * |eager|`` with atol = rtol = 1e-4
(float32); the largest differences are written to export.json, and a file outside the tolerance
is an error (exit 1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Problem, UserError
from .evaluate import positive_int, run_tool, split_arguments

USAGE = """\
usage: mtl-export <run dir> [checkpoint=best|last|<file.pt>] [output=<folder>]
                  [formats=safetensors,onnx,torch_export] [opset=N] [verify=true|false]

Exports the model of a finished mtl-train run: weights as safetensors (with the config beside
them), an ONNX graph (every task an output, dynamic batch) and a torch.export program.

arguments:
  <run dir>          the run's folder (holds config.yaml and checkpoints/)
  checkpoint=NAME    best (default), last, or the path of a .pt file
  output=FOLDER      where to write (default <run dir>/export/<checkpoint>/)
  formats=LIST       any of safetensors, onnx, torch_export (default: all three)
  opset=N            the ONNX opset (default: the exporter's)
  verify=BOOL        compare each exported file with the model on a probe batch (default true)

files:
  model.safetensors  weights; config.yaml, data.json, export.json beside them
                     (mtl-predict <output folder> input=... predicts from them)
  model.onnx         inputs named after the input keys, outputs after the tasks (raw outputs:
                     logits for classification/binary/multilabel/segmentation)
  model.pt2          torch.export.load(path).module()(*inputs)

examples:
  mtl-export outputs/my_run
  mtl-export outputs/my_run checkpoint=last formats=onnx output=deploy/
  python -c "import onnxruntime as ort; s = ort.InferenceSession('deploy/model.onnx'); print(s.get_outputs())"

exit codes: 0 done; 1 an exported file differs from the model; 2 a problem with the arguments,
the run directory or a missing package (pip install "mtl-cli[export]")."""

FORMATS = ("safetensors", "onnx", "torch_export")
#: what each format needs: (modules, what)
NEEDS = {
    "safetensors": (("safetensors",), "safetensors"),
    "onnx": (("onnx", "onnxscript"), "ONNX export"),
    "torch_export": ((), "torch.export"),
}
FILES = {"safetensors": "model.safetensors", "onnx": "model.onnx", "torch_export": "model.pt2"}
#: verification tolerance (float32): |exported - eager| <= ATOL + RTOL * |eager|
ATOL = RTOL = 1e-4
#: the probe batch sizes a verification runs (1 and more: the batch axis is dynamic)
PROBE_BATCHES = (1, 3)
FORMAT_VERSION = 1


class ExportMismatch(UserError):
    """An exported file gives other outputs than the model in PyTorch."""

    title = "Export check failed"
    exit_code = 1


def io_name(key: str) -> str:
    """An input key or task name as an ONNX input/output name (``/`` -> ``.``, others -> ``_``)."""
    return re.sub(r"[^\w.\-]", "_", key.replace("/", "."))


def _bool(key: str, text: str) -> bool:
    t = str(text).lower()
    if t in ("true", "yes", "1"):
        return True
    if t in ("false", "no", "0"):
        return False
    raise ConfigError([Problem(key, "expected true or false", text, allowed="true, false", fix=f"{key}=true")])


def _formats(text: str) -> list[str]:
    items = [f.strip() for f in str(text).strip("[]").split(",") if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise ConfigError(
            [
                Problem(
                    "formats",
                    "unknown export format" if bad else "no format given",
                    text,
                    allowed=", ".join(FORMATS),
                    fix="e.g. formats=safetensors,onnx",
                )
            ]
        )
    return list(dict.fromkeys(items))


def check_packages(formats: list[str]) -> None:
    import importlib.util

    problems = []
    for f in formats:
        modules, what = NEEDS[f]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            problems.append(
                Problem(
                    "formats",
                    f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed",
                    f,
                    fix=f'pip install "mtl-cli[export]" (or pip install {" ".join(missing)}), '
                    f"or leave {f} out of formats",
                )
            )
    if problems:
        raise ConfigError(problems)


# ---------------------------------------------------------------- the exported function
def graph_inputs(run) -> list[str]:
    """The model's input keys, in the order of the tasks that read them."""
    return list(dict.fromkeys(t.input for t in run.tasks))


def positional(run):
    """The model as ``f(*inputs) -> (output of each task, in task order)``: the form ONNX and
    torch.export take (every input present, so every task is predicted)."""
    import torch

    keys, names = graph_inputs(run), [t.name for t in run.tasks]

    class Positional(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *xs):
            out = self.model(dict(zip(keys, xs)))
            return tuple(out[n] for n in names)

    return Positional(run.model).eval()


def probe(run, batch: int, seed: int = 0) -> tuple:
    """A batch of random inputs of the model's input shapes."""
    import torch

    g = torch.Generator().manual_seed(seed + batch)
    return tuple(torch.randn(batch, *run.plan.spec.inputs[k].shape, generator=g) for k in graph_inputs(run))


def dynamic_batch(run, shared: bool = False):
    """torch.export's dynamic shapes: dim 0 of every input dynamic, one size per input (or one
    size shared by all, for models that mix their inputs)."""
    from torch.export import Dim

    keys = graph_inputs(run)
    if shared:
        d = Dim("batch", min=1, max=1 << 20)
        return (tuple({0: d} for _ in keys),)
    return (tuple({0: Dim(batch_axis(run, k), min=1, max=1 << 20)} for k in keys),)


def batch_axis(run, key: str) -> str:
    """The name of input ``key``'s batch axis: ``batch``, or ``batch_<input>`` with several inputs."""
    return "batch" if len(graph_inputs(run)) == 1 else "batch_" + re.sub(r"\W", "_", io_name(key))


def export_program(run):
    """The model as a torch.export ExportedProgram with dynamic batch axes."""
    import torch

    f, xs = positional(run), probe(run, 2)
    try:
        return torch.export.export(f, xs, dynamic_shapes=dynamic_batch(run))
    except Exception:  # noqa: BLE001 - inputs whose batches the model relates: one shared batch size
        return torch.export.export(f, xs, dynamic_shapes=dynamic_batch(run, shared=True))


# ---------------------------------------------------------------- writers
def write_safetensors(run, path: Path, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    # contiguous copies of every tensor (weights shared between modules are stored once per key)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in run.model.state_dict().items()}
    save_file(state, str(path), metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # (written 0600): as readable as the other files


def write_onnx(run, path: Path, opset: int | None) -> None:
    """The ONNX graph, from the model (so that the batch axes keep their names: ``batch``, or
    ``batch_<input>`` per input)."""
    import warnings

    import torch

    size = sum(p.numel() * p.element_size() for p in run.model.state_dict().values())

    def export(shared: bool) -> None:
        torch.onnx.export(
            positional(run),
            probe(run, 2),
            str(path),
            input_names=[io_name(k) for k in graph_inputs(run)],
            output_names=[io_name(t.name) for t in run.tasks],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_batch(run, shared),
            external_data=size > 1_800_000_000,  # one file below ONNX's 2 GB protobuf limit
            verbose=False,
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            export(False)
        except Exception:  # noqa: BLE001 - inputs whose batches the model relates: one shared batch size
            export(True)


def eager_outputs(run, xs: tuple) -> list:
    import torch

    with torch.no_grad():
        return [y.float() for y in positional(run)(*xs)]


def _max_diff(got, want) -> tuple[float, bool]:
    """(largest |got - want|, within ATOL + RTOL * |want|)."""
    import torch

    got = torch.as_tensor(got).float()
    if tuple(got.shape) != tuple(want.shape):
        return float("inf"), False
    diff = (got - want).abs()
    return float(diff.max()) if diff.numel() else 0.0, bool((diff <= ATOL + RTOL * want.abs()).all())


def verify(run, files: dict[str, Path]) -> dict[str, Any]:
    """Each exported file on the probe batches against the eager model: the largest difference
    per task, and whether it is within the tolerance."""
    import importlib.util

    import torch

    names = [t.name for t in run.tasks]
    out: dict[str, Any] = {}
    runners = {}
    if "torch_export" in files:
        module = torch.export.load(str(files["torch_export"])).module()
        runners["torch_export"] = lambda xs: [y for y in module(*xs)]
    if "onnx" in files:
        if importlib.util.find_spec("onnxruntime") is None:
            out["onnx"] = {"skipped": 'onnxruntime is not installed (pip install "mtl-cli[export]")'}
        else:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
            inputs = [io_name(k) for k in graph_inputs(run)]
            outputs = [io_name(n) for n in names]
            runners["onnx"] = lambda xs: sess.run(outputs, {i: x.numpy() for i, x in zip(inputs, xs)})
    for fmt, fn in runners.items():
        worst: dict[str, float] = dict.fromkeys(names, 0.0)
        ok = True
        for b in PROBE_BATCHES:
            xs = probe(run, b)
            want = eager_outputs(run, xs)
            with torch.no_grad():
                got = fn(xs)
            for n, g, w in zip(names, got, want):
                d, fits = _max_diff(g, w)
                worst[n] = max(worst[n], d)
                ok &= fits
        out[fmt] = {"max_abs_diff": worst, "within_tolerance": ok, "batches": list(PROBE_BATCHES)}
    return out


def describe(run, formats: list[str], checkpoint: str, verified: dict, opset: int | None) -> dict:
    """export.json: what the files hold and how to feed them."""
    import torch

    spec = run.plan.spec.inputs
    xs = probe(run, 1)
    outs = eager_outputs(run, xs)
    return {
        "format": "mtl-cli-export",
        "version": FORMAT_VERSION,
        "run_dir": str(run.run_dir),
        "checkpoint": checkpoint,
        "step": run.step,
        "epoch": run.epoch,
        "torch": torch.__version__,
        "files": {f: FILES[f] for f in formats} | {"config": "config.yaml"},
        "inputs": [
            {
                "name": io_name(k),
                "key": k,
                "shape": [batch_axis(run, k), *spec[k].shape],
                "dtype": "float32",
                "modality": spec[k].modality,
            }
            for k in graph_inputs(run)
        ],
        "outputs": [
            {
                "name": io_name(t.name),
                "task": t.name,
                "kind": t.kind.name,
                "input": io_name(t.input),
                "shape": [batch_axis(run, t.input), *list(y.shape[1:])],
                "dtype": "float32",
            }
            for t, y in zip(run.tasks, outs)
        ],
        "onnx_opset": opset,
        "verification": {"atol": ATOL, "rtol": RTOL, **verified},
    }


def export_run(
    run_dir: str | Path,
    checkpoint: str = "best",
    output: str | Path | None = None,
    formats: list[str] | tuple[str, ...] = FORMATS,
    opset: int | None = None,
    check: bool = True,
) -> Path:
    """Export a finished run (see the module's documentation); returns the output folder."""
    from ..runs import load_run
    from ..train.rundir import write_json, writing

    formats = list(formats)
    check_packages(formats)
    run = load_run(run_dir, checkpoint, ["device=cpu"])
    out = Path(output).expanduser() if output else run.run_dir / "export" / run.checkpoint_name
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    with writing(out):
        shutil.copyfile(run.run_dir / "config.yaml", out / "config.yaml")
        if (run.run_dir / "data.json").is_file():
            shutil.copyfile(run.run_dir / "data.json", out / "data.json")
        if (run.run_dir / ".hydra" / "hydra.yaml").is_file():  # where the run started: its relative data paths
            (out / ".hydra").mkdir(exist_ok=True)
            shutil.copyfile(run.run_dir / ".hydra" / "hydra.yaml", out / ".hydra" / "hydra.yaml")
        if "safetensors" in formats:
            meta = {"format": "mtl-cli-export", "checkpoint": run.checkpoint_name}
            meta |= {"step": str(run.step), "epoch": str(run.epoch)}
            write_safetensors(run, out / FILES["safetensors"], meta)
            files["safetensors"] = out / FILES["safetensors"]
        if "torch_export" in formats:
            import torch

            torch.export.save(export_program(run), str(out / FILES["torch_export"]))
            files["torch_export"] = out / FILES["torch_export"]
        if "onnx" in formats:
            write_onnx(run, out / FILES["onnx"], opset)
            files["onnx"] = out / FILES["onnx"]
    verified = verify(run, files) if check else {}
    write_json(out / "export.json", describe(run, formats, run.checkpoint_name, verified, opset))
    bad = [f for f, v in verified.items() if v.get("within_tolerance") is False]
    if bad:
        raise ExportMismatch(
            [
                Problem(
                    FILES[f],
                    "gives other outputs than the model in PyTorch: largest differences "
                    + ", ".join(f"{n} {d:.3g}" for n, d in verified[f]["max_abs_diff"].items()),
                    allowed=f"|exported - eager| <= {ATOL} + {RTOL} x |eager|",
                    fix="report it with the run's config; the other files are usable",
                )
                for f in bad
            ]
        )
    return out


def run_export(argv: list[str]) -> Path:
    run_dir, opts, overrides = split_arguments(
        argv,
        {"checkpoint": "best", "output": None, "formats": ",".join(FORMATS), "opset": None, "verify": "true"},
        USAGE,
        "mtl-export",
    )
    if overrides:
        raise ConfigError(
            [
                Problem(
                    o.split("=", 1)[0],
                    "mtl-export takes no config overrides",
                    o,
                    allowed="checkpoint, output, formats, opset, verify",
                    fix="remove it",
                )
                for o in overrides
            ]
        )
    formats = _formats(opts["formats"])
    opset = positive_int("opset", opts["opset"])
    check = _bool("verify", opts["verify"])
    out = export_run(run_dir, opts["checkpoint"], opts["output"], formats, opset, check)
    info = json.loads((out / "export.json").read_text())
    print(f"Run directory: {info['run_dir']}")
    print(f"Checkpoint {info['checkpoint']} (epoch {info['epoch']}, step {info['step']})")
    for f in formats:
        v = info["verification"].get(f, {})
        if "within_tolerance" in v:
            note = f"  (checked: largest difference {max(v['max_abs_diff'].values()):.2g})"
        elif "skipped" in v:
            note = f"  (not checked: {v['skipped']})"
        else:
            note = ""
        print(f"  {out / FILES[f]}{note}")
    print(
        f"  {out / 'export.json'}: inputs {', '.join(i['name'] for i in info['inputs'])}; outputs "
        f"{', '.join(o['name'] for o in info['outputs'])}",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> None:
    run_tool(run_export, USAGE, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
