"""``mtl-predict``: per-task predictions of a finished run for new inputs.

    mtl-predict <run dir> input=<files, folder or list> [output=<file.csv|file.jsonl>]
                [checkpoint=best] [batch_size=64] [resize=auto|true|false] [dataset=<name>]

The run's data source prepares the inputs exactly as it prepares training samples
(``DataSource.prepare_inputs``); each task's kind turns its outputs into records
(``TaskKind.decode``). The built-in kinds write:

- classification: the class name (the run's label map, else the data's class names, else the
  index) and the probability of every class;
- binary: the probability and the 0/1 label at threshold 0.5; multilabel: the same per label;
- regression: the value (mapped back to the target's units when the source recorded a scaling
  ``target_scaling: {target: {mean, std}}`` in its artifacts);
- segmentation: a PNG of class indices, dense regression: a 16-bit PNG (value x 65535, clipped
  to [0, 1], the scale image_manifest reads 16-bit maps with), one per input and task, written to
  ``<output stem>_masks/<input stem>_<task>.png`` at the input image's own size; the output holds
  the file's path.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import sys
from pathlib import Path

from ..config.typecheck import flatten
from ..errors import ConfigError, DataError, Problem
from ..results.cells import csv_cell, one_line
from .evaluate import positive_int, run_tool, split_arguments

USAGE = """\
usage: mtl-predict <run dir> input=<file(s), folder or list> [output=<file.csv|file.jsonl>]
                   [checkpoint=best|last|<file.pt>] [batch_size=64] [resize=auto|true|false]
                   [dataset=NAME] [<config overrides>...]

Predicts every task of a finished mtl-train run for new inputs, prepared as the run's data
source prepares its training samples. Writes one row (CSV) or one JSON object (JSONL) per input.

arguments:
  <run dir>        the run's folder (holds config.yaml and checkpoints/), or a folder of
                   mtl-export (config.yaml and model.safetensors: its weights are read)
  input=PATH       an input file, a folder (its files of the kind the source reads), a glob
                   ('imgs/*.png'), or a CSV listing image paths (column image or path, else the
                   first); repeat input= or separate paths with commas for several
                   image sources (shapes, image_manifest, torchvision, multi_mnist): image files
                   csv source: tables with the run's feature columns (one prediction per row)
  output=FILE      .csv or .jsonl (default <run dir>/predictions/predictions-<checkpoint>.csv)
  checkpoint=NAME  best (default), last, the path of a .pt file, or a .safetensors file of
                   mtl-export
  batch_size=N     inputs per forward pass (default 64)
  resize=POLICY    images of another size than the run's: auto (default) does what the source
                   did in training (image_manifest and torchvision resize; shapes refuses;
                   multi_mnist takes 36x36 canvases), true resizes, false refuses
  dataset=NAME     with several datasets: whose tasks to predict (default: data)
  <config overrides>  data.*, device, ... as for mtl-eval (e.g. data.path=<moved training csv>)

outputs per task kind:
  classification  <task>.label, <task>.index, <task>.probs.<class>
  binary          <task>.label (0/1 at 0.5), <task>.prob
  multilabel      <task>.labels.<label> (0/1 at 0.5), <task>.probs.<label>
  regression      <task>.value (<task>.value.<i> for vectors)
  segmentation    <task>.mask: a PNG of class indices in <output stem>_masks/
  dense_regression <task>.map: a 16-bit PNG (value x 65535) in <output stem>_masks/

examples:
  mtl-predict outputs/my_run input=photos/ output=preds.csv
  mtl-predict outputs/my_run input=a.png,b.png output=preds.jsonl checkpoint=last
  mtl-predict outputs/tabular_run input=new_rows.csv output=preds.csv
  mtl-predict outputs/my_run/export/best input=photos/    # the weights of mtl-export

exit codes: 0 done; 2 a problem with the arguments, the run directory, its config or the inputs."""

FORMATS = (".csv", ".jsonl")
RESIZE = {"auto": None, "true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
PREVIEW_ROWS = 8


def input_paths(values: list[str]) -> list[Path]:
    """The user's input= values as paths: globs expanded (sorted), comma-separated lists split
    (unless the whole value names an existing file); existence is checked later."""
    if not values:
        raise ConfigError(
            [
                Problem(
                    "input",
                    "missing",
                    fix="set input=<image file, folder, CSV of image paths or "
                    "table of features>; see mtl-predict --help",
                )
            ]
        )
    out: list[Path] = []
    for v in values:
        parts = [v] if os.path.exists(v) or "," not in v else [p for p in v.split(",") if p]
        for p in parts:
            matches = sorted(glob.glob(os.path.expanduser(p))) if any(c in p for c in "*?[") else []
            out += [Path(m) for m in matches] if matches else [Path(p).expanduser()]
    missing = [p for p in out if not p.exists()]
    if missing:
        raise DataError(
            [
                Problem(
                    "input",
                    f"no such file or folder: {p}",
                    str(p),
                    fix=f"check the path (relative paths resolve against {Path.cwd()})",
                )
                for p in missing[:10]
            ]
        )
    return out


class MaskWriter:
    """Writes the per-input PNGs of dense tasks into ``folder`` (made when first needed); the
    :class:`~mtl_cli.tasks.base.ImageWriter` of ``TaskKind.decode``."""

    def __init__(self, folder: Path):
        self.folder = folder

    def write(self, array, stem: str, name: str, size: tuple[int, int] | None, mode: str) -> str:
        import numpy as np
        from PIL import Image

        from ..train.rundir import writing

        img = Image.fromarray(array.astype(np.uint16 if mode == "I;16" else np.uint8))
        if size is not None and img.size != tuple(size):
            img = img.resize(tuple(size), Image.NEAREST)  # back to the input's size; class indices kept
        path = self.folder / f"{stem}_{name}.png"
        with writing(path):
            self.folder.mkdir(parents=True, exist_ok=True)
            img.save(path)
        return str(path.resolve())


def columns(record: dict) -> dict:
    """A record as one CSV row: nested dicts and lists -> one level of ``a.b.c`` / ``a.0`` keys
    (``config.typecheck.flatten`` over lists made index-keyed; an empty dict or list makes no column)."""
    record = _indexed(record)
    return flatten(record)


def _indexed(v):
    """``v`` with every list a mapping by index and empty mappings left out."""
    if isinstance(v, list):
        v = {str(i): x for i, x in enumerate(v)}
    if not isinstance(v, dict):
        return v
    out = {k: _indexed(x) for k, x in v.items()}
    return {k: x for k, x in out.items() if not (isinstance(x, dict) and not x)}


def predict_run(
    run,
    paths: list[Path],
    batch_size: int = 64,
    resize: bool | None = None,
    dataset: str | None = None,
    masks_dir: Path | None = None,
) -> list[dict]:
    """One record {"input": name, <task>: {...}} per input, for the tasks of ``dataset``."""
    import torch

    from ..data.base import PRIMARY, qualify
    from ..tasks.base import Decoding

    used = run.plan.used_datasets()
    d = dataset or (PRIMARY if PRIMARY in used else used[0])
    if d not in used:
        raise ConfigError(
            [
                Problem(
                    "dataset",
                    "no task of the run reads this dataset",
                    d,
                    allowed=", ".join(used),
                    fix="choose one of the allowed datasets",
                )
            ]
        )
    from ..train import distributed

    comm = distributed.current()  # several processes (torchrun): each predicts its shard of the files
    source = run.plan.sources[d]
    artifacts = run.artifacts(d)
    tasks = [t for t in run.tasks if t.dataset == d]
    files = source.prediction_files(paths)
    if comm.active:
        files = [files[i] for i in distributed.shard(len(files), comm.rank, comm.world)]
    masks = MaskWriter(masks_dir or run.run_dir / "predictions" / "masks")
    warnings: dict[str, int] = {}
    records: list[dict] = []
    with torch.no_grad():
        for start in range(0, len(files), batch_size):
            prepared = source.prepare_inputs(files[start : start + batch_size], artifacts, resize)
            for lo in range(0, len(prepared), batch_size):
                hi = min(lo + batch_size, len(prepared))
                inputs = {qualify(d, k): v[lo:hi].to(run.device) for k, v in prepared.inputs.items()}
                with run.autocast():
                    preds = run.model(inputs)
                rows = [{"input": n} for n in prepared.names[lo:hi]]
                sizes = prepared.sizes[lo:hi] if prepared.sizes else None
                out = Decoding(artifacts, prepared.stems[lo:hi], sizes, masks, warnings)
                for t in tasks:
                    if t.name not in preds:
                        continue
                    for row, rec in zip(rows, t.decode(preds[t.name], out)):
                        row[t.name] = rec
                records += rows
    if comm.active:  # the shards in rank order: the files' order
        records = [r for part in comm.all_gather_object(records) for r in part]
        counts = comm.all_gather_object(warnings)
        warnings = {k: sum(c.get(k, 0) for c in counts) for k in {k for c in counts for k in c}}
    for what, n in warnings.items():
        if n and comm.is_main:
            sys.stderr.write(f"warning: {n} {what}\n")
    return records


def write_records(records: list[dict], path: Path) -> None:
    """CSV (flattened columns, in first-seen order) or JSONL, written atomically. In the CSV, text
    cells and headers that a spreadsheet would take as a formula (a class label ``=1+2``) get a
    leading ``'`` (:func:`~mtl_cli.results.cells.csv_cell`); numbers are written as they are. JSONL
    keeps the records' values as they are."""
    from ..train.rundir import writing

    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(r, allow_nan=True) + "\n" for r in records)
    else:
        rows = [columns(r) for r in records]
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([csv_cell(c) for c in cols])
        w.writerows([csv_cell(r.get(c, "")) for c in cols] for r in rows)
        text = buf.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)


def preview(records: list[dict], tasks: list) -> str:
    """The first records as a table: one column per task (a :class:`~mtl_cli.tasks.base.Task`),
    each cell its kind's ``summary`` of the record."""
    rows = [
        [one_line(Path(r["input"]).name)]
        + [one_line(t.kind.summary(t, r[t.name])) if t.name in r else "" for t in tasks]
        for r in records[:PREVIEW_ROWS]
    ]
    head = ["input", *(t.name for t in tasks)]
    widths = [max(len(str(x)) for x in col) + 2 for col in zip(head, *rows)]
    lines = ["".join(f"{c:<{w}}" for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    if len(records) > PREVIEW_ROWS:
        lines.append(f"... ({len(records) - PREVIEW_ROWS} more)")
    return "\n".join(lines)


def predict_options(
    output: str | os.PathLike | None, resize: str | bool | None, batch_size: str | int | None
) -> tuple[Path | None, bool | None, int | None]:
    """mtl-predict's options checked: (output path or None, resize policy: None for auto, True or
    False; batch size or None); ConfigError names every bad one."""
    problems = []
    path = Path(output).expanduser() if output else None
    if path is not None and path.suffix.lower() not in FORMATS:
        problems.append(
            Problem(
                "output",
                "unknown output format",
                str(output),
                allowed=".csv, .jsonl",
                fix="name a .csv or .jsonl file, e.g. output=predictions.csv",
            )
        )
    policy = "auto" if resize is None else str(resize).lower()
    if policy not in RESIZE:
        problems.append(
            Problem(
                "resize",
                "unknown resize policy",
                resize,
                allowed="auto, true, false",
                fix="resize=auto does what the run's data source did in training",
            )
        )
    if problems:
        raise ConfigError(problems)
    return path, RESIZE[policy], positive_int("batch_size", batch_size)


def default_output(run) -> Path:
    """Where mtl-predict writes without output=: ``<run dir>/predictions/predictions-<checkpoint>.csv``."""
    return run.run_dir / "predictions" / f"predictions-{run.checkpoint_name}.csv"


def masks_folder(output: Path) -> Path:
    """The folder of the PNGs of dense tasks, beside ``output``: ``<output stem>_masks``."""
    return output.parent / f"{output.stem}_masks"


def run_predict(argv: list[str]) -> Path:
    from ..runs import load_run

    run_dir, opts, overrides = split_arguments(
        argv,
        {"output": None, "checkpoint": "best", "batch_size": "64", "resize": "auto", "dataset": None},
        USAGE,
        "mtl-predict",
        repeated=("input",),
    )
    output, resize, batch_size = predict_options(opts["output"], opts["resize"], opts["batch_size"])
    paths = input_paths(opts["input"])
    run = load_run(run_dir, opts["checkpoint"], overrides)
    output = output or default_output(run)
    records = predict_run(run, paths, batch_size or 64, resize, opts["dataset"], masks_folder(output))
    from ..train import distributed

    if not distributed.current().is_main:  # several processes: rank 0 writes and reports
        return output
    write_records(records, output)
    tasks = [t for t in run.tasks if any(t.name in r for r in records[:1])]
    print(
        f"Run directory: {run.run_dir}\nCheckpoint {run.checkpoint_name} (epoch {run.epoch}, step {run.step}): "
        f"{len(records)} input(s), tasks {', '.join(t.name for t in tasks)}\n"
    )
    print(preview(records, tasks))
    print(f"\nwritten to {output.resolve()}", flush=True)
    return output


def main(argv: list[str] | None = None) -> None:
    from ..train.distributed import leaving_cleanly

    with leaving_cleanly():  # a process of several (torchrun) ends with its status, past finalisation
        run_tool(run_predict, USAGE, argv)


if __name__ == "__main__":
    main()
