"""The README and docs tell the truth.

- Generated sections (tools/gen_docs.py, between ``<!-- generated: NAME -->`` and
  ``<!-- end generated -->``) are what the script makes from the code as it is: the tables from
  conf/ and the outputs that need no training here; the outputs of training runs (the README's
  headline metrics included) with ``-m slow``.
- Every Markdown table renders as a table (no blank line or paragraph inside it, every row with the
  header's cells); no internal issue numbers or paths outside the repository; the module table of
  docs/architecture.md lists every module; the case counts of docs/guarantees.md are pytest's.
- The example files are what examples/make_examples.py writes, and they work: a tabular run on
  examples/houses.csv, predictions for examples/images/, evaluation from another folder.
- The commands the README fixed: ``--version``, ``launcher=slurm`` without Slurm, a misspelt
  option, ``+data.missing_labels``, Δm on the console, mtl-report's width, threads.
- Slow: every command of the README's ``<!-- commands: ... -->`` blocks runs as written, with
  ``debug=smoke`` added to each mtl-train command, as the README says.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "examples"))

import gen_docs  # noqa: E402
import make_examples  # noqa: E402

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MTL_DEBUG", "HYDRA_FULL_ERROR", "MTL_CONFIG_DIR")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])  # this checkout
    return env | extra


# ----------------------------------------------------------------------------- generated sections
def test_every_section_has_its_markers():
    for s in gen_docs.SECTIONS:
        assert s.name in gen_docs.find_sections((REPO / s.file).read_text(), s.file), (s.file, s.name)


def test_generated_tables_are_what_conf_holds():
    """The README's config groups (every option of every group, from conf/) and task keys."""
    sections = gen_docs.selected(["tables"])
    assert {s.name for s in sections} == {"config-groups", "task-keys"}
    assert gen_docs.check(sections, gen_docs.generate(sections, log=lambda m: None)) == []
    table = gen_docs.section_body(REPO / "README.md", "config-groups")
    for group in ("arch", "weighting", "data", "backbone", "tasks", "experiment", "hparams_search", "launcher", "task"):
        row = next(line for line in table.splitlines() if line.startswith(f"| `{group}` |"))
        for option in gen_docs.group_options(group):
            assert re.search(rf"[ |,]{re.escape(option)}[ ,(|]", row), (group, option)


def test_fast_outputs_are_what_the_commands_print():
    """Config errors and mtl-configs, as quoted in the README and docs/workflow.md (no training)."""
    sections = gen_docs.selected(["fast"])
    problems = gen_docs.check(sections, gen_docs.generate(sections, log=lambda m: None))
    assert problems == [], "run python tools/gen_docs.py --only fast\n" + "\n\n".join(problems)


@pytest.mark.slow
def test_training_outputs_are_what_the_runs_print():
    """The default run's metrics in the README, and every other quoted run (docs/workflow.md), are
    what the code prints now (times, memory and dates masked)."""
    sections = gen_docs.selected(["slow"])
    problems = gen_docs.check(sections, gen_docs.generate(sections, log=lambda m: None))
    assert problems == [], "run python tools/gen_docs.py --only slow\n" + "\n\n".join(problems)


def test_the_check_masks_times_but_not_metrics():
    have = "shape    accuracy ↑*    0.9420    0.9440\n* primary metric   time/step 110.2 ms   wall 48.1 s"
    same = "shape    accuracy ↑*    0.9420    0.9440\n* primary metric   time/step 400.0 ms   wall 130.5 s"
    other = "shape    accuracy ↑*    0.9420    0.9260\n* primary metric   time/step 110.2 ms   wall 48.1 s"
    assert gen_docs.normalize(have, "exact") == gen_docs.normalize(same, "exact")
    assert gen_docs.normalize(have, "exact") != gen_docs.normalize(other, "exact")


# ----------------------------------------------------------------------------- Markdown
DELIMITER = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?$")


def _cells(line: str) -> list[str]:
    s = line.strip()
    s = s[1:] if s.startswith("|") else s
    s = s[:-1] if s.endswith("|") and not s.endswith("\\|") else s
    return re.split(r"(?<!\\)\|", s)  # GitHub splits cells at every unescaped |, in code spans too


def table_problems(text: str, name: str) -> list[str]:
    """What would not render as the table it looks like (GitHub-flavoured Markdown): rows without a
    header and delimiter row above them (a blank line or a paragraph inside a table), rows with
    another number of cells than the header, and text right after a table (it becomes a row)."""
    out, lines, fence, i = [], text.split("\n"), None, 0
    while i < len(lines):
        st = lines[i].strip()
        m = re.match(r"^(```+|~~~+)", st)
        if m:
            fence = m.group(1) if fence is None else (None if st.rstrip("`~") == "" else fence)
            i += 1
            continue
        if fence or not st.startswith("|"):
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].strip().startswith("|"):
            j += 1
        block = lines[i:j]
        if len(block) < 2 or not DELIMITER.match(block[1].strip()):
            out.append(f"{name}:{i + 1}: table rows without a header and delimiter row above them")
        else:
            n = len(_cells(block[0]))
            for k, row in enumerate(block[1:], start=i + 2):
                if len(_cells(row)) != n:
                    out.append(f"{name}:{k}: {len(_cells(row))} cells, the header has {n} (escape | as \\|)")
        if j < len(lines) and lines[j].strip():
            out.append(f"{name}:{j + 1}: text right after a table becomes one of its rows: leave a blank line")
        i = j
    return out


def test_markdown_tables_render():
    problems = [p for f in DOCS for p in table_problems(f.read_text(), str(f.relative_to(REPO)))]
    assert problems == []


def test_the_table_check_finds_broken_tables():
    ok = "| a | b |\n|---|---|\n| 1 | `x \\| y` |\n\ntext"
    assert table_problems(ok, "ok") == []
    assert table_problems("| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n", "gap")  # blank line inside
    assert table_problems("| a | b |\n|---|---|\n| 1 | `x | y` |\n", "pipe")  # unescaped | in code
    assert table_problems("| a | b |\n|---|---|\n| 1 | 2 |\nNotes.\n", "text")  # a paragraph glued on


def test_docs_name_no_internal_issue_numbers_or_outside_paths():
    for f in DOCS:
        text = f.read_text()
        issues = re.findall(r"(?i)\bissues? \d+|\bissue-\d+|\bthe issue's\b|\bof the issue\b", text)
        assert not issues, (f.name, issues)
        assert not re.findall(r"`\.\./", text), (f.name, "a path outside the repository")


def _tracked_modules() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "mtl_cli"], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("git is not available")
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [p for p in out.stdout.split() if p.endswith(".py")]


#: folders whose row in the module table says "one file per ..." instead of naming each file
ONE_FILE_PER = ("mtl_cli/weighting/", "sources/", "kinds/", "backbones/", "heads/", "archs/", "loggers/")


def test_module_table_lists_every_module():
    """docs/architecture.md's table of modules and layers names every committed module of mtl_cli
    (files of "one file per ..." folders aside), and only paths that exist."""
    text = (REPO / "docs" / "architecture.md").read_text()
    start = text.index("| layer | path | role |")
    rows = text[start : text.index("\n\n", start)].splitlines()[2:]
    table: dict[str, str] = {}
    for row in rows:
        _, _, path, role, _ = row.split("|", 4)
        for p in re.findall(r"`(mtl_cli/[\w/.]*)`", path):
            table[p] = role
    missing = []
    for module in _tracked_modules():
        if module == "mtl_cli/__init__.py" or module in table:
            continue
        folder = next(
            (p for p in sorted(table, key=len, reverse=True) if p.endswith("/") and module.startswith(p)), None
        )
        if folder is None:
            missing.append(module)
            continue
        rest = module[len(folder) :]
        if rest.endswith("__init__.py"):
            continue
        role = table[folder]
        named = f"`{rest}`" in role or (
            "/" in rest and f"`{rest.split('/')[0]}/`" in role and any(rest.startswith(d) for d in ONE_FILE_PER)
        )
        if not named and not (module.startswith(ONE_FILE_PER[0]) and "one file per method" in role):
            missing.append(module)
    assert missing == [], "add them to docs/architecture.md's module table"
    for p in table:
        assert (REPO / p).exists(), f"docs/architecture.md names {p}, which does not exist"


def test_the_library_table_names_every_declared_package():
    """docs/ecosystem.md's table of libraries has a row for every package pyproject.toml declares,
    in the dependencies and in every extra (a new dependency comes with its why)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for reqs in project["optional-dependencies"].values() for r in reqs]
    names = {re.split(r"[\[<>=~!; ]", r, maxsplit=1)[0].lower() for r in declared if not r.startswith("mtl-cli")}
    text = (REPO / "docs" / "ecosystem.md").read_text()
    rows = {m.lower() for m in re.findall(r"^\| `([\w.-]+)` \|", text, re.M)}
    assert len(names) > 20
    assert sorted(names - rows) == [], "add a row to docs/ecosystem.md's table of libraries"


def test_case_counts_in_guarantees_are_pytests():
    """docs/guarantees.md's "(N cases)" after a test (or test file) is the number pytest collects."""
    text = (REPO / "docs" / "guarantees.md").read_text()
    claims = re.findall(r"`((?:tests/)?test_\w+\.py(?:::\w+)?)` \((\d+) cases", text)
    assert len(claims) >= 5
    targets = sorted({("tests/" + t if not t.startswith("tests/") else t) for t, _ in claims})
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow or not slow", "-p", "no:cacheprovider"]
        + targets,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    for target, n in claims:
        full = target if target.startswith("tests/") else "tests/" + target
        got = sum(1 for i in ids if i == full or i.startswith(full + "[") or i.startswith(full + "::"))
        assert got == int(n), f"docs/guarantees.md says {target} has {n} cases; pytest collects {got}"


# ----------------------------------------------------------------------------- example files
def test_example_files_are_what_the_script_writes():
    assert make_examples.stale() == []


def _cli(args: list[str], cwd: Path, timeout: float = 600, **env) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout)


def test_tabular_example_trains_predicts_and_evaluates_from_another_folder(tmp_path, monkeypatch, capsys):
    """The README's tabular commands (debug=smoke), then mtl-eval and mtl-predict from another
    folder: the run's relative data.path is read where the run was started. mtl-train runs as a
    command (Hydra records the folder it started in); mtl-eval and mtl-predict run in this process."""
    import mtl_cli.cli.evaluate as ev
    import mtl_cli.cli.predict as pr

    work = tmp_path / "work"
    shutil.copytree(REPO / "examples", work / "examples")
    train = [
        "mtl-train",
        "experiment=tabular",
        "data.path=examples/houses.csv",
        "data.targets={price: price, kind: kind}",
        "+tasks.price.kind=regression",
        "+tasks.kind.kind=classification",
        "run_dir=outputs/houses",
        "debug=smoke",
        "trainer.progress=false",
    ]
    done = _cli(train, work)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "price           regression" in done.stdout and "kind            classification" in done.stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", "MTL_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(elsewhere)
    run = str(work / "outputs" / "houses")
    capsys.readouterr()
    ev.main([run])
    err = capsys.readouterr().err
    assert f"data.path: the run read examples/houses.csv in the folder it was started in: {work}" in err
    pr.main([run, f"input={work / 'examples' / 'new_houses.csv'}", "output=p.csv"])
    assert len((elsewhere / "p.csv").read_text().splitlines()) == 4  # header + 3 houses
    # the file moved away: the error names the override that fixes it
    shutil.move(work / "examples", tmp_path / "moved")
    capsys.readouterr()
    with pytest.raises(SystemExit) as gone:
        ev.main([run])
    err = capsys.readouterr().err
    assert gone.value.code == 2 and "Traceback" not in err
    assert "give its location, data.path=<path>" in err
    ev.main([run, f"data.path={tmp_path / 'moved' / 'houses.csv'}"])


def test_example_images_can_be_predicted(tmp_path, monkeypatch):
    """mtl-predict (in this process) on examples/images/ with a smoke run of the default experiment."""
    import mtl_cli.cli.predict as pr
    from mtl_cli.config.compose import compose
    from mtl_cli.train.api import train

    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", "MTL_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    train(compose(["debug=smoke", "trainer.progress=false"]), run)
    pr.main([str(run), f"input={REPO / 'examples' / 'images'}", "output=preds.csv"])
    rows = (tmp_path / "preds.csv").read_text().splitlines()
    truth = (REPO / "examples" / "images.csv").read_text().splitlines()
    assert len(rows) == len(truth) == 5 and rows[0].startswith("input,shape.label")


# ----------------------------------------------------------------------------- fixed commands
def test_version_is_mtl_clis(capsys):
    from importlib.metadata import version

    from mtl_cli.cli import train

    train.main(["--version"])
    out = capsys.readouterr().out
    assert out.startswith(f"mtl-cli {version('mtl-cli')} (torch ") and "Hydra" not in out


def test_slurm_without_slurm_exits_2_and_creates_nothing(tmp_path, monkeypatch, capsys):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from mtl_cli.cli import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as exc:
        train.main(["-m", "launcher=slurm", "seed=0,1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert "this machine has no Slurm (sbatch and srun not found on PATH)" in err and "submitit_local" in err
    assert list(tmp_path.iterdir()) == []


def test_a_misspelt_option_gets_did_you_mean(capsys):
    from mtl_cli.cli import train

    with pytest.raises(SystemExit) as exc:
        train.main(["arch=mmeo"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "did you mean mmoe?" in err and "fix: use arch=mmoe" in err


def test_missing_labels_as_the_readme_writes_it(tmp_path, monkeypatch):
    from mtl_cli.cli.precheck import precheck
    from mtl_cli.config.compose import compose

    monkeypatch.chdir(tmp_path)

    precheck(["+data.missing_labels={size: 0.7}", "trainer.progress=false"])  # no ConfigError
    assert compose(["+data.missing_labels={size: 0.7}"]).data.missing_labels == {"size": 0.7}
    assert "'+data.missing_labels={size: 0.7}'" in (REPO / "README.md").read_text()


def test_the_readmes_tasks_yaml_is_a_valid_config(tmp_path, monkeypatch):
    """The README's ``conf/tasks/my_tasks.yaml`` example, saved in a config directory as its first
    line says, composes and passes validation with the values it sets."""
    from mtl_cli.cli.precheck import precheck
    from mtl_cli.config.compose import compose

    blocks = re.findall(r"```yaml\n(# conf/tasks/my_tasks\.yaml\n.*?)\n```", (REPO / "README.md").read_text(), re.S)
    assert len(blocks) == 1
    (tmp_path / "my_conf" / "tasks").mkdir(parents=True)
    (tmp_path / "my_conf" / "tasks" / "my_tasks.yaml").write_text(blocks[0] + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MTL_CONFIG_DIR", str(tmp_path / "my_conf"))
    precheck(["tasks=my_tasks", "trainer.progress=false"])  # no ConfigError
    tasks = compose(["tasks=my_tasks"]).tasks
    assert sorted(tasks) == ["big", "shape", "size"]
    assert (tasks.size.loss, list(tasks.size.metrics), tasks.size.weight) == ("huber", ["mae", "r2"], 2.0)
    assert (tasks.big.kind, tasks.big.target, tasks.big.role, tasks.big.head.name) == (
        "binary",
        "large",
        "auxiliary",
        "mlp",
    )


def test_delta_m_is_printed_at_the_end_of_a_run():
    from mtl_cli.cli.summary import format_summary

    summary = {
        "run_dir": "/r",
        "objective": {"monitor": "mean_rel", "value": 0.5},
        "selected_epoch": 3,
        "epochs": 3,
        "steps": 96,
        "tasks": {
            "shape": {"kind": "classification", "directions": {"accuracy": "higher"}, "primary_metric": "accuracy"}
        },
        "test": {"shape": {"accuracy": 0.5}},
        "val_selected": {"shape": {"accuracy": 0.4}},
        "time_per_step_s": 0.1,
        "wall_time_s": 10.0,
        "peak_memory_mb": 800.0,
        "peak_memory_kind": "process_max_rss",
        "delta_m": {"test": -18.432, "val": -18.856, "per_task": {}, "skipped": [], "baseline_dir": "/stl"},
    }
    text = format_summary(summary)
    line = next(ln for ln in text.splitlines() if "Δm % ↑" in ln)
    assert line.split()[-2:] == ["-18.8560", "-18.4320"] and "/stl" in text
    del summary["delta_m"]
    assert "Δm" not in format_summary(summary)


def test_a_wide_report_is_wrapped_to_the_console():
    """mtl-report's console table fits its width: wider, the columns come in blocks, each repeating
    # and group, and every cell is still printed."""
    from mtl_cli.report import Stat
    from mtl_cli.report.groups import Group
    from mtl_cli.report.leaderboard import DELTA_M, EXTRA_COLUMNS, Column, Row
    from mtl_cli.report.tables import table_cells, to_text

    columns = [Column(f"task{i}", "metric", "higher") for i in range(12)]
    keys = [DELTA_M, *[c.key for c in columns], *[k for k, _ in EXTRA_COLUMNS]]
    rows = [
        Row(Group("mtl", (("weighting", w),), [], f"weighting={w}"), {k: Stat(0.5 + i, 0.01, 3) for k in keys}, [], [])
        for i, w in enumerate(["ew", "uw"])
    ]
    assert max(len(line) for line in to_text(rows, columns).splitlines()) > 200  # one block: too wide
    text = to_text(rows, columns, 100)
    assert max(len(line) for line in text.splitlines()) <= 100 and text.count("#  group") >= 3
    head, body = table_cells(rows, columns)
    for title in head:
        assert title in text
    for cells in body:
        lines = [ln for ln in text.splitlines() if f"  {cells[1]}  " in ln + "  "]
        assert all(any(c in ln for ln in lines) for c in cells), cells


def test_threads_are_capped_at_the_usable_cpus_and_never_set_by_load(monkeypatch):
    import torch

    from mtl_cli.cli import train

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        monkeypatch.setattr(train, "usable_cpus", lambda: 1)
        monkeypatch.setattr(train.os, "getloadavg", lambda: (5.0, 5.0, 5.0))
        assert train.configure_threads("cpu") is None  # one thread: nothing to wait on
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.setattr(train, "usable_cpus", lambda: 2)
        warning = train.configure_threads("cpu")
        assert torch.get_num_threads() == 2  # a busy machine does not change the thread count
        assert warning and "load average 5.0 on 2 usable CPUs" in warning and "OMP_NUM_THREADS=1" in warning
        monkeypatch.setattr(train.os, "getloadavg", lambda: (0.3, 0.3, 0.3))
        assert train.configure_threads("cpu") is None
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        monkeypatch.setattr(train.os, "getloadavg", lambda: (5.0, 5.0, 5.0))
        monkeypatch.setattr(train, "usable_cpus", lambda: 1)
        assert train.configure_threads("cpu") is None and torch.get_num_threads() == 2  # the user's choice
    finally:
        torch.set_num_threads(before)


def test_the_readme_says_how_to_activate_and_how_to_install_cpu_torch():
    text = (REPO / "README.md").read_text()
    assert "source .venv/bin/activate" in text
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "OMP_NUM_THREADS=1" in text


def test_ci_runs_the_readmes_test_command():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    assert blocks[0].startswith("python3 -m venv .venv") and blocks[0].endswith(".venv/bin/mtl-train")
    test_command = blocks[1]
    assert "pytest" in test_command
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    # verbatim: alone on its line, or as the whole command that a time limit runs
    wrapped = [line for line in ci if line.startswith("timeout ") and line.endswith(f"bash -c '{test_command}'")]
    assert test_command in ci or wrapped, ci


# ----------------------------------------------------------------------------- the README's commands
def readme_commands() -> list[str]:
    """The commands of the README's blocks marked ``<!-- commands: ... -->``, in order."""
    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"<!-- commands:[^>]*-->\n```bash\n(.*?)\n```", text, re.S):
        for line in block.splitlines():
            if line.strip():
                out.append(line)
    return out


def smoke(line: str) -> str:
    """The command with ``debug=smoke`` added to each mtl-train call (before its comment)."""
    parts = []
    for cmd in re.split(r"\s*;\s*", re.sub(r"\s+#.*$", "", line).strip()):
        words = shlex.split(cmd)
        if words and words[0] == "mtl-train":
            cmd += " debug=smoke"
        parts.append(cmd)
    return "; ".join(parts)


def test_readme_commands_are_found():
    commands = readme_commands()
    assert len(commands) >= 25 and commands[0].startswith("mtl-train --help")
    assert smoke("mtl-train arch=mmoe                     # all nine") == "mtl-train arch=mmoe debug=smoke"
    assert (
        smoke("mtl-configs list launcher; mtl-configs copy my_conf")
        == "mtl-configs list launcher; mtl-configs copy my_conf"
    )


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    """Each command of the README's command blocks, in order, in one fresh folder with the
    examples, with debug=smoke added to each mtl-train call: exit 0."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = _env(COLUMNS="100")
    for line in readme_commands():
        cmd = smoke(line)
        done = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def test_quoted_metrics_compare_to_a_few_percent_and_words_and_integers_exactly():
    have = ["Selected epoch 10 of 10 (monitor mean_rel = 0.6913), 320 steps", "shape accuracy 0.9320 0.9320"]
    other_cpu = ["Selected epoch 10 of 10 (monitor mean_rel = 0.6922), 320 steps", "shape accuracy 0.9340 0.9300"]
    assert gen_docs.close_numbers(have, other_cpu)
    assert not gen_docs.close_numbers(have, [have[0], "shape accuracy 0.8000 0.9320"])  # a real change
    assert not gen_docs.close_numbers(have, [have[0].replace("10 of 10", "9 of 10"), have[1]])  # integers exact
    assert not gen_docs.close_numbers(have, [have[0], "size accuracy 0.9320 0.9320"])  # words exact
    assert not gen_docs.close_numbers(have, have[:1])
    assert gen_docs.close_numbers(["Δm -18.9118"], ["Δm -19.0447"]) and not gen_docs.close_numbers(
        ["Δm -18.9"], ["Δm 18.9"]
    )
