"""The README is part of the product: its two opening commands are what `make` and CI run, its
`make demo` block is what the CLI prints for the recorded demo run, its command-line examples
parse and (with small budgets) run, and its Python example runs."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
sys.path.insert(0, str(REPO / "benchmarks"))
import common as benchmarks_common  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def _make_dry_run(target: str) -> list[list[str]]:
    """The commands ``make <target>`` runs, printed by ``make -n`` with the venv taken as set up."""
    out = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.installed", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one(tmp_path) -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: setup", makefile, re.M) and re.search(r"^test: setup", makefile, re.M)

    # CI: run .ci/run with a `make` that records its arguments
    (tmp_path / "make").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n')
    (tmp_path / "make").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    subprocess.run([str(REPO / ".ci" / "run")], cwd=tmp_path, env=env, check=True)
    assert (tmp_path / "calls").read_text().split("\n")[:-1] == ["test"]

    # `make test` runs the whole suite (no selection), `make demo` the bare `policykd distill`,
    # the console script pyproject installs, which is the job the demo block below records
    assert _make_dry_run("test") == [[".venv/bin/python", "-m", "pytest", "-q"]]
    assert _make_dry_run("demo") == [[".venv/bin/policykd", "distill"]]
    assert re.search(r'^policykd = "policykd\.cli:main"$', (REPO / "pyproject.toml").read_text(), re.M)
    sys.path.insert(0, str(REPO / "benchmarks"))
    import distill_checks

    demo_check = dict(distill_checks.CHECKS)[benchmarks_common.DEMO_CHECK]
    assert distill_checks.cli_command(demo_check) == "policykd distill"


def test_the_demo_block_is_what_the_cli_prints_for_the_recorded_demo_run() -> None:
    """The block sits between generated markers and equals the CLI's output for the summary of
    the demo job in benchmarks/results (regenerate it with `python benchmarks/distill_checks.py`)."""
    cell = REPO / "benchmarks" / "results" / "distill_checks" / f"{benchmarks_common.DEMO_CHECK}.json"
    summary = json.loads(cell.read_text())
    block = re.search(r"<!-- demo:start -->\n(.*?)\n<!-- demo:end -->", README, re.S).group(1)
    assert block == benchmarks_common.demo_output(summary)
    assert f"| {summary['teacher_latency_ms']:.3f}" in block and f"{summary['wall_time_s']:.0f} s" in block


# The `policykd` lines of the README's command blocks; placeholders (A, B) and hub ids are parsed only.
COMMAND_LINES = [
    line.split("  #")[0].strip()
    for block in re.findall(r"```bash\n(.*?)```", README, re.S)
    for line in block.replace("\\\n", " ").splitlines()
    if line.strip().startswith("policykd ")
]


@pytest.mark.parametrize("line", COMMAND_LINES)
def test_every_readme_command_line_parses(line, monkeypatch, tmp_path) -> None:
    """Each example reaches its command with the options the README gives (nothing is run)."""
    from policykd import cli

    argv, called = shlex.split(line)[1:], []
    if "--config" in argv:  # the file the example names, with keys the README's sweep example shows
        monkeypatch.chdir(tmp_path)
        Path(argv[argv.index("--config") + 1]).write_text("temperatures: [0.5, 5]\nseeds: 3\n")
    monkeypatch.setitem(cli.COMMANDS, argv[0], lambda args: called.append(args))
    cli.main(argv)
    assert len(called) == 1 and called[0].command == argv[0]


def test_the_readme_workflow_runs_with_small_budgets(tmp_path, monkeypatch, capsys) -> None:
    """collect -> distill --buffer -> evaluate -> export -> evaluate the ONNX file, as the README's
    command block writes them, with the budgets cut (transitions, updates, episodes)."""
    from policykd.cli import main

    smaller = {"--n-transitions": "512", "--episodes": "2"}
    distill_budget = ["--n-updates", "50", "--eval-episodes", "1", "--no-progress", "--no-teacher-check"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "agents").symlink_to(REPO / "agents")
    ran = []
    for line in COMMAND_LINES:
        argv = shlex.split(line)[1:]
        if argv[0] not in ("collect", "evaluate", "export") and "--buffer" not in argv:
            continue
        if "PongNoFrameskip-v4_1" in line:
            continue  # an Atari episode per evaluation: test_zoo covers the Atari recipe
        argv = [smaller.get(argv[i - 1], arg) if i else arg for i, arg in enumerate(argv)]
        if "--buffer" in argv:  # into the folder the following lines evaluate and export
            argv += [*distill_budget, "--out", "runs/CartPole-v1/kl-tau1-seed0"]
        main(argv)
        ran.append(argv[0])
        capsys.readouterr()
    assert ran == ["collect", "distill", "evaluate", "export", "evaluate", "evaluate"]
    assert (tmp_path / "runs/CartPole-v1/kl-tau1-seed0/student/policy.onnx").is_file()


@pytest.mark.expensive
def test_python_api_example_runs(tmp_path, monkeypatch, capsys) -> None:
    import numpy as np

    from policykd.data.buffers import LabelledBuffer
    from policykd.data.teachers import load_teacher
    from policykd.learn.students import Student

    section = README.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace('"agents/', f'"{REPO}/agents/')
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "runs/api-example/student/student.safetensors").is_file()
    assert (tmp_path / "runs/api-example/buffer.npz").is_file()
    # what it prints and leaves behind: a smaller student that acts as its teacher
    assert capsys.readouterr().out.strip() == "770 student params vs 4610 teacher params"
    buffer = LabelledBuffer.load(tmp_path / "runs/api-example/buffer.npz")
    assert len(buffer) == 10_000 and namespace["actions"].shape == (8,)
    student, teacher = (
        Student.load(tmp_path / "runs/api-example/student"),
        load_teacher(REPO / "agents/ppo/CartPole-v1_1"),
    )
    observations = buffer.batch_at(np.arange(0, 10_000, 10)).observations.numpy()
    assert (student.act(observations) == teacher.act(observations)).mean() > 0.8  # an untrained one: ~0.5


@pytest.mark.expensive
def test_five_line_quick_start_runs(tmp_path, monkeypatch) -> None:
    """The README's load / predict / evaluate_policy / export / record block, on a small run in the
    folder it names."""
    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import distill

    monkeypatch.chdir(tmp_path)
    run = "runs/CartPole-v1/kl-tau1-seed0"
    distill(DistillConfig(teacher=str(REPO / "agents/ppo/CartPole-v1_1"), n_transitions=2_000, n_updates=300,
                          n_eval_episodes=2, progress_bar=False, out_dir=run))  # fmt: skip
    section = README.split("## Five lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {"__name__": "readme_quick_start"}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["actions"].shape == (1,) and namespace["mean_return"] > 100  # well above random (~22)
    assert (tmp_path / run / "ppo-CartPole-v1.zip").is_file()
    assert (tmp_path / "runs/videos/student-episode-0.mp4").stat().st_size > 0


def test_the_readme_quotes_the_faults_benchmark_as_recorded() -> None:
    """The reliability section's resume figures are the ones benchmarks/faults.py recorded."""
    recorded = json.loads((REPO / "benchmarks/results/faults-quick.json").read_text())
    for job in ("distill", "sweep"):
        trials = recorded[job]["trials"]
        passed = sum(bool(t["equal"] and t["tb_steps_equal"]) for t in trials)
        quoted = re.search(rf"`policykd {job}`[^*]*\*\*(\d+)/(\d+)\*\*", README.split("## Reliability", 1)[1])
        assert quoted and (int(quoted.group(1)), int(quoted.group(2))) == (passed, len(trials)), job


def test_the_readme_counts_the_bad_input_catalogue_as_it_is() -> None:
    """The reliability section's counts are the catalogue's (tests/test_bad_inputs.py)."""
    sys.path.insert(0, str(REPO / "tests"))
    import test_bad_inputs

    cases = test_bad_inputs.CASES
    open_rows = sum(1 for case in cases if case.gap)
    quoted = re.search(r"lists the (\d+) bad\s+inputs the tests try over every command \((\d+) handled", README)
    assert quoted and (int(quoted.group(1)), int(quoted.group(2))) == (len(cases), len(cases) - open_rows)


def test_readme_teacher_coverage_figures_are_the_results_file():
    """The teacher-coverage sentence quotes benchmarks/results/teacher_coverage.json (python benchmarks/teacher_coverage.py)."""
    cells = json.loads((REPO / "benchmarks" / "results" / "teacher_coverage.json").read_text())["cells"]
    linear = [c for c in cells if c["teacher_params"] < 100]
    others = [c for c in cells if c["teacher_params"] >= 100]
    assert linear and all(c["pct_of_teacher"] >= 90 and c["param_fraction"] <= 0.30 for c in others)
    quoted = re.search(r"linear ARS policy gets a linear\s+student \(([\d.]+) %, at (\d+) %", README)
    assert quoted and quoted.groups() == (
        f"{linear[0]['pct_of_teacher']:.1f}",
        f"{100 * linear[0]['param_fraction']:.0f}",
    )


def _labels(mean: str, per_seed: str) -> str:
    """``5,000 | 4,000, 5,000, not reached`` (compare_drivers.md) as the README writes it: ``5,000 (4k, 5k, —)``."""
    seeds = [
        ("—" if s.strip() == "not reached" else f"{int(s.replace(',', '')) // 1000}k") for s in per_seed.split(", ")
    ]
    return f"{mean} ({', '.join(seeds)})"


def test_the_readme_quotes_the_drivers_table_as_recorded() -> None:
    """Each row of the README's labels-to-95 % table is the compare_drivers.md row of that task."""
    recorded = (REPO / "benchmarks/results/compare_drivers.md").read_text()
    sections = {m.group(1): m.group(2) for m in re.finditer(r"^## (\S+)\n(.*?)(?=^## |\Z)", recorded, re.S | re.M)}
    rows = re.findall(r"^\| (\S+) \(([\d,]+), ([\d,]+)\) \| (.+?) \| (.+?) \| (.+?) \|$", README, re.M)
    if not rows and benchmarks_common.stale_cells("compare_drivers"):  # withheld until the rerun lands
        withheld = [line for line in README.splitlines() if line.startswith(benchmarks_common.WITHHELD)]
        assert any("benchmarks/compare_drivers.py --refresh-stale" in line for line in withheld), "say it is withheld"
        return
    assert len(rows) == 5, "the README's drivers table"
    for env_id, labels, _, *quoted in rows:
        name = f"{env_id}-fine" if env_id == "LunarLander-v3" and labels == "1,000" else env_id
        cells = [_labels(*(v.strip() for v in re.findall(rf"^\| {d} \| [^|]+ \| ([^|]+) \| ([^|]+) \|", sections[name], re.M)[0]))
                 for d in ("teacher", "student", "dagger")]  # fmt: skip
        assert [q.replace("**", "").replace(" (on-policy)", "") for q in quoted] == cells, name


# -- figures written into the README's prose --------------------------------------------------------

RESULTS = REPO / "benchmarks" / "results"
# A figure: a decimal (96.8), a thousands-separated integer (5,582) or a percentage (91 %).
FIGURE = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+\.\d+|\d+(?= %))(?![\w.]\d)")
# Settings, not measurements: versions, τ / ε / λ / lr values, CLI flags' values, and the few design
# constants the prose names (each phrase here is one).
SETTINGS = re.compile(
    r"[τελ] ?=? ?\d[\d.e-]*|lr \d[\d.e-]*|--[\w-]+ [\d.,]+|>= ?\d[\d.]*"
    r"|default [\d,.]+|gymnasium \d[\d.]*|action\s+noise \d[\d.]*|\(0\.1, the default\)|\b95 %|~25 %, 7 % and 4 %"
    r"|1,000 LunarLander transitions are one env's 1,000|ending 42 % above it|\(of 100, 200, 500, 1,000, 2,000, 5,000 transitions[;)]|\d+ % (?:CI|interval)|at most 25 %|action\s+(?:gets\s+)?90 %|spread of 4,000 actions|within ±2\.5 %|below 10,000 steps"
)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?")


def _cited_files(paragraph: str) -> set[Path]:
    """The results a paragraph cites: `benchmarks/X.py` (X.md, X.json and its cached cells) or a results file."""
    files: set[Path] = set()
    for script in re.findall(r"benchmarks/(\w+)\.py", paragraph):
        files |= {RESULTS / f"{script}.md", RESULTS / f"{script}.json", *RESULTS.glob(f"{script}/**/*.json")}
    files |= {RESULTS / name for name in re.findall(r"results/([\w-]+\.(?:md|json))", paragraph)}
    return {f for f in files if f.is_file()}


def _prose_paragraphs() -> list[tuple[str, set[Path]]]:
    """README paragraphs outside code and generated blocks, each with the results it (or the paragraph
    before it, within one section) cites."""
    text = re.sub(r"<!-- ([\w-]+):start -->.*?<!-- \1:end -->", "", README, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    paragraphs, cited = [], set()
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.startswith("#"):
            cited = set()
        cited = _cited_files(paragraph) or cited
        if cited:
            paragraphs.append((paragraph, cited))
    return paragraphs


@functools.cache
def _numbers(path: Path) -> tuple[float, ...]:
    """Every number written in a results file, read once however many figures cite it."""
    values = []
    for number in NUMBER.findall(path.read_text(errors="ignore")):
        try:
            values.append(float(number.replace(",", "")))
        except ValueError:
            continue
    return tuple(values)


def _recorded(figure: str, files: set[Path]) -> bool:
    """Whether some number in ``files`` rounds to ``figure`` at the figure's precision."""
    decimals = len(figure.split(".")[1]) if "." in figure else 0
    wanted = float(figure.replace(",", ""))
    # abs: the README writes − for -
    return any(abs(abs(value) - wanted) <= 0.5 * 10**-decimals + 1e-9 for f in files for value in _numbers(f))


def test_every_figure_in_the_readme_prose_is_in_the_results_it_cites() -> None:
    """A figure quoted by hand next to a benchmark (5,582 ± 483; 0.87 of in-process collection) must be
    in that benchmark's results, so that a rerun which moves it fails here until the prose follows."""
    missing = [
        f"{figure} (citing {', '.join(sorted({f.name for f in files})[:4])}, ...): {paragraph[:60]!r}"
        for paragraph, files in _prose_paragraphs()
        for figure in FIGURE.findall(SETTINGS.sub("", paragraph))
        if not _recorded(figure, files)
    ]
    assert not missing, "\n".join(missing)


def test_the_readme_quotes_no_results_that_older_library_code_computed() -> None:
    """No README block quotes a results folder holding cells that library code other than today's
    computed (it says it is withheld; `python benchmarks/run_all.py --withhold-stale` writes that), and
    no prose figure cites such results (issue 21: stale cells are rerun before the README quotes them)."""
    blocks = dict(re.findall(r"<!-- ([\w-]+):start -->\n(.*?)<!-- \1:end -->", README, re.S))
    assert set(blocks) == set(benchmarks_common.README_BLOCKS), "map each README block in common.README_BLOCKS"
    for block, (stem, _) in benchmarks_common.stale_blocks().items():
        assert blocks[block].startswith(benchmarks_common.WITHHELD), f"{block} quotes stale cells of {stem}/"
    has_stale_cells = functools.cache(lambda stem: bool(benchmarks_common.stale_cells(stem)))
    for paragraph, files in _prose_paragraphs():
        stems = {f.stem for f in files if f.suffix == ".md" and f.parent == RESULTS}
        old = [stem for stem in stems if has_stale_cells(stem)]
        figures = FIGURE.findall(SETTINGS.sub("", paragraph))
        assert not (old and figures), f"{paragraph[:60]!r} quotes {figures} from {old}/, which holds stale cells"
