"""Cells of the CSV and Markdown tables the tools write cannot act as spreadsheet formulas or as
Markdown/HTML markup: the escaping functions on a table of inputs, mtl-predict on a run whose
class labels are formulas and markup (CSV escaped, JSONL raw), and mtl-report on runs whose
overrides are (report.csv escaped, report.md keeps its columns and holds no raw HTML)."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
from pathlib import Path

import pytest
from test_report import EW, report, write_run

import mtl_cli.cli.predict as pr
from mtl_cli.config.compose import compose
from mtl_cli.results.cells import csv_cell, is_number, md_cell, md_code, one_line
from mtl_cli.train.api import train

HYPERLINK = '=HYPERLINK("http://x","y")'
LABELS = ["=1+2", HYPERLINK, "@SUM(A1)", "+1", "-2", "a|b", "<script>"]
#: each label as its CSV cell: formulas get a leading ', numbers ("+1", "-2") and plain text stay
CSV_LABEL = {
    "=1+2": "'=1+2",
    HYPERLINK: "'" + HYPERLINK,
    "@SUM(A1)": "'@SUM(A1)",
    "+1": "+1",
    "-2": "-2",
    "a|b": "a|b",
    "<script>": "<script>",
}


# ----------------------------------------------------------------------------- the functions
@pytest.mark.parametrize(
    "value, want",
    [
        # formula starts: a leading '
        ("=1+2", "'=1+2"),
        (HYPERLINK, "'" + HYPERLINK),
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("+foo.bar", "'+foo.bar"),
        ("-x", "'-x"),
        ("--", "'--"),
        ("-", "'-"),
        ("+", "'+"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\n=1", "'\n=1"),
        ("-1+2", "'-1+2"),
        ("-1,5", "'-1,5"),
        ("- 1", "'- 1"),
        ("-1e", "'-1e"),
        ("-0x10", "'-0x10"),
        ("+١", "'+١"),  # an Arabic-Indic digit is no plain number
        ("-inf()", "'-inf()"),
        # plain numbers: as they are
        ("-1.5", "-1.5"),
        ("+1", "+1"),
        ("-2", "-2"),
        ("1e-3", "1e-3"),
        ("+1e-3", "+1e-3"),
        ("-1.5E+10", "-1.5E+10"),
        ("-.5", "-.5"),
        ("-5.", "-5."),
        ("nan", "nan"),
        ("-nan", "-nan"),
        ("-inf", "-inf"),
        ("+inf", "+inf"),
        ("-Infinity", "-Infinity"),
        # other text: as it is
        ("", ""),
        ("abc", "abc"),
        ("a=1+2", "a=1+2"),
        ("a|b", "a|b"),
        ("<script>", "<script>"),
        (" =1", " =1"),
        ("'=1", "'=1"),  # already escaped: one quote, not two
        ("0,1,2", "0,1,2"),
        # Python values: numbers and None unchanged (the csv module writes them), others as text
        (-0.5, -0.5),
        (float("-inf"), float("-inf")),
        (3, 3),
        (True, True),
        (None, None),
        (Path("-p"), "'-p"),
    ],
)
def test_csv_cell(value, want):
    got = csv_cell(value)
    assert type(got) is type(want) and got == want


def test_csv_cell_keeps_nan():
    got = csv_cell(float("nan"))
    assert isinstance(got, float) and math.isnan(got)


@pytest.mark.parametrize(
    "text, number",
    [("-1.5", True), ("1e-3", True), ("nan", True), ("-inf", True), ("", False), ("-", False), (" 1", False)],
)
def test_is_number(text, number):
    assert is_number(text) is number


@pytest.mark.parametrize(
    "text, want",
    [
        ("", ""),
        ("weighting=ew lr=0.001", "weighting=ew lr=0.001"),
        ("-1.5", "-1.5"),
        ("1e-3", "1e-3"),
        ("nan", "nan"),
        ("-inf", "-inf"),
        ("0.62 ± 0.12", "0.62 ± 0.12"),
        ("shape/accuracy ↑", "shape/accuracy ↑"),
        ("=1+2", "=1+2"),  # no formula in Markdown
        ("a|b", "a\\|b"),
        ("a\nb", "a b"),
        ("a\r\nb", "a b"),
        ("a\rb\u2028c", "a b c"),
        ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("<http://x>", "&lt;http://x&gt;"),
        ("a & b", "a &amp; b"),
        ("&lt;", "&amp;lt;"),
        ("`code` *em* _u_ [l](x)", "`code` *em* _u_ [l](x)"),  # ordinary Markdown text stays readable
        ("x|<i>\n&", "x\\|&lt;i&gt; &amp;"),
    ],
)
def test_md_cell(text, want):
    assert md_cell(text) == want


@pytest.mark.parametrize(
    "text, want",
    [
        ("a=1 b=2", "`a=1 b=2`"),
        ("", "``"),
        ("<b>", "`<b>`"),  # shown, not rendered, inside a code span
        ("a`b", "``a`b``"),
        ("a``b`", "``` a``b` ```"),
        ("`a", "`` `a ``"),
        ("x\ny", "`x y`"),
    ],
)
def test_md_code(text, want):
    assert md_code(text) == want


def test_one_line():
    assert one_line("a\nb\r\nc\rd\x0be\x0cf\x85g") == "a b c d e f g"
    assert one_line("plain text") == "plain text"


def test_write_records_escapes_headers_and_text_cells(tmp_path):
    recs = [
        {"input": "=in", "-t": {"label": "@x", "index": 1, "probs": {"=1+2": 0.25, "-2": -0.5}}},
        {"input": "b.png", "-t": {"label": "-2", "index": 0, "probs": {"=1+2": float("-inf"), "-2": 1e-3}}},
    ]
    pr.write_records(recs, tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines() == [
        "input,'-t.label,'-t.index,'-t.probs.=1+2,'-t.probs.-2",
        "'=in,'@x,1,0.25,-0.5",
        "b.png,-2,0,-inf,0.001",
    ]
    pr.write_records(recs, tmp_path / "p.jsonl")
    assert [json.loads(ln) for ln in (tmp_path / "p.jsonl").read_text().splitlines()] == recs


# ----------------------------------------------------------------------------- mtl-predict
@pytest.fixture(scope="module")
def label_run(tmp_path_factory):
    """A tabular run whose class labels are formulas, numbers as text and markup; the label is a
    bin of x1, so the trained model predicts several of them."""
    folder = tmp_path_factory.mktemp("labels")
    rnd = random.Random(0)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["x1", "x2", "cls"])
    for i in range(280):
        x1 = rnd.uniform(0, len(LABELS))
        label = LABELS[min(int(x1), len(LABELS) - 1)] if i >= len(LABELS) else LABELS[i]
        w.writerow([f"{x1:.4f}", f"{rnd.uniform(-1, 1):.4f}", label])
    (folder / "d.csv").write_text(buf.getvalue())
    run = folder / "run"
    overrides = [
        "experiment=tabular",
        f"data.path={folder / 'd.csv'}",
        "data.targets={cls: cls}",
        "+tasks.cls.kind=classification",
        "trainer.max_epochs=15",
        "trainer.batch_size=32",
        "trainer.progress=false",
        "device=cpu",
        "logger.console_summary=false",
    ]
    train(compose(overrides), run)
    return folder, run


def test_predict_csv_escapes_labels_and_jsonl_keeps_them(label_run, tmp_path, monkeypatch, capsys):
    folder, run = label_run
    monkeypatch.chdir(tmp_path)
    (tmp_path / "new.csv").write_text("x1,x2\n" + "".join(f"{i + 0.5},0.1\n" for i in range(len(LABELS))))
    for out in ("p.csv", "p.jsonl"):
        pr.main([str(run), f"input={tmp_path / 'new.csv'}", f"output={tmp_path / out}"])
    printed = capsys.readouterr().out
    with open(tmp_path / "p.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    recs = [json.loads(ln) for ln in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == len(recs) == len(LABELS)
    # the header: a column per class, named after the raw label (the task name comes first)
    assert header == ["input", "cls.label", "cls.index", *[f"cls.probs.{c}" for c in sorted(LABELS)]]
    for row, rec in zip(rows, recs):
        cells = dict(zip(header, row))
        # JSONL: the raw labels
        assert rec["cls"]["label"] in LABELS and sorted(rec["cls"]["probs"]) == sorted(LABELS)
        # CSV: the label escaped, the probabilities the same numbers as the JSONL's
        assert cells["cls.label"] == CSV_LABEL[rec["cls"]["label"]]
        assert int(cells["cls.index"]) == rec["cls"]["index"]
        for c in LABELS:
            assert float(cells[f"cls.probs.{c}"]) == rec["cls"]["probs"][c]
            assert not cells[f"cls.probs.{c}"].startswith("'")
    predicted = {r["cls"]["label"] for r in recs}
    assert any(c.startswith(("=", "@")) for c in predicted), predicted  # a formula label was written
    assert all(f"{r['cls']['label']} (" in printed for r in recs)  # the console preview shows the raw labels


# ----------------------------------------------------------------------------- mtl-report
NOTES = ["=1+2", "a|b", "<b>bold</b>"]
TAGS = ["@SUM(A1)", "x\ny", "-x"]
LRS = ["-1.5", "0.5", "1e-3"]


@pytest.fixture
def odd_runs(tmp_path) -> Path:
    """Three runs (one group each) whose overrides are formulas, pipes, line breaks and HTML; a
    shared override with a backtick, a line break and HTML."""
    root = tmp_path / "sweep"
    for j, (note, tag, lr) in enumerate(zip(NOTES, TAGS, LRS)):
        extra = [f"note={note}", f"+tag={tag}", f"lr={lr}", "+shared=`x`\n<i>"]
        write_run(root / str(j), seed=0, weighting="ew", extra=extra, **EW[j])
    return root


def md_table(md: str) -> list[list[str]]:
    """The cells of every table line of report.md, split at the pipes that are not escaped."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    return [re.split(r"(?<!\\)\|", ln.strip())[1:-1] for ln in lines]


def test_report_csv_and_markdown_escape_override_values(odd_runs, tmp_path, capsys):
    out = tmp_path / "out"
    code, text, err = report([str(odd_runs), "--out", str(out), "--no-plots"], capsys)
    assert code == 0, err

    with open(out / "report.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header[:6] == ["rank", "group", "kind", "note", "'+tag", "lr"]
    by_note = {r[3]: dict(zip(header, r)) for r in rows}
    assert sorted(by_note) == sorted(["'=1+2", "a|b", "<b>bold</b>"])
    assert [by_note[n]["'+tag"] for n in ("'=1+2", "a|b", "<b>bold</b>")] == ["'@SUM(A1)", "x\ny", "'-x"]
    assert [by_note[n]["lr"] for n in ("'=1+2", "a|b", "<b>bold</b>")] == ["-1.5", "0.5", "0.001"]
    for j, n in enumerate(("'=1+2", "a|b", "<b>bold</b>")):  # numbers unchanged
        row = by_note[n]
        assert float(row["shape/accuracy_mean"]) == EW[j]["test"]["shape"]["accuracy"]
        assert float(row["delta_m_mean"]) == EW[j]["delta_m"] and row["n"] == "1" and row["seeds"] == "0"
        assert row["group"].startswith("note=") and "'" not in row["group"]  # the label starts with its key

    md = (out / "report.md").read_text()
    table = md_table(md)
    assert len(table) == 2 + 3 and {len(r) for r in table} == {len(table[0])}  # every row: the header's columns
    groups = sorted(r[1].strip() for r in table[2:])
    assert groups == sorted(
        [
            "note==1+2 +tag=@SUM(A1) lr=-1.5",
            "note=a\\|b +tag=x y lr=0.5",
            "note=&lt;b&gt;bold&lt;/b&gt; +tag=-x lr=0.001",
        ]
    )
    assert "<b>" not in md and "</b>" not in md
    # the shared override: one line, in a code span its backticks cannot end
    (note,) = [ln for ln in md.splitlines() if ln.startswith("- shared by all runs:")]
    assert note == "- shared by all runs: ``weighting=ew trainer.max_epochs=2 +shared=`x` <i>``"

    # the console table: one line per group, whatever the labels hold
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("#  group"))
    body = lines[start + 1 : start + 4]
    assert [ln.split()[0] for ln in body] == ["1", "2", "3"] and lines[start + 4] == ""
    assert any("+tag=x y" in ln for ln in body)
