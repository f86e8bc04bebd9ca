"""The benchmarks' shared plumbing: a --quick run never overwrites the full run's results or the
README sections that quote them, and a cached cell says which code and config computed it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
from code_trace import CodeTrace  # noqa: E402


@pytest.fixture(autouse=True)
def code_maps_in_tmp(tmp_path, monkeypatch):
    """A cell's code map goes to the scratch results, not into benchmarks/results/code."""
    trace = CodeTrace(common.LIBRARY_DIR, tmp_path / "results" / "code")
    monkeypatch.setattr(common, "CODE_TRACE", trace)
    yield
    trace.unwatch_presets()  # cached_run watched the library's preset lookups for this trace


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:start -->\nold\n<!-- table:end -->\nrest\n")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(common, "README", readme)
    return tmp_path


# Cells stamped with the whole library's fingerprint (traced=False: computed in other processes), so
# that patching library_fingerprint stands for a change to the library.
WHOLE_LIBRARY = {"traced": False}


def test_results_name_keeps_quick_apart():
    assert common.results_name("merge_strategies", quick=False) == "merge_strategies"
    assert common.results_name("merge_strategies", quick=True) == "merge_strategies-quick"


def test_quick_publish_leaves_full_results_and_readme(scratch):
    common.publish("bench", "full text", quick=False, readme_marker="table", readme_text="full table")
    common.publish("bench", "quick text", quick=True, readme_marker="table", readme_text="quick table")
    assert (scratch / "results" / "bench.md").read_text() == "full text"
    assert (scratch / "results" / "bench-quick.md").read_text() == "quick text"
    assert (scratch / "README.md").read_text() == "intro\n<!-- table:start -->\nfull table\n<!-- table:end -->\nrest\n"


def test_publish_without_markers_fails_loudly(scratch):
    (scratch / "README.md").write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        common.publish("bench", "text", quick=False, readme_marker="table", readme_text="x")


def counting_run(value):
    calls = []

    def run():
        calls.append(1)
        return {"value": value}

    return run, calls


@pytest.fixture
def fresh_stale_list(monkeypatch):
    monkeypatch.setattr(common, "STALE_CELLS", [])


def test_cached_run_reuses_a_cell_and_hides_its_stamp(tmp_path, fresh_stale_list):
    run, calls = counting_run(1)
    assert common.cached_run(tmp_path, "cell", run, config={"lr": 1}) == {"value": 1}
    assert common.cached_run(tmp_path, "cell", run, config={"lr": 1}) == {"value": 1}
    assert len(calls) == 1 and common.STALE_CELLS == [] and common.stale_note() == ""
    assert common.CACHE_STAMP in common.read_json(tmp_path / "cell.json")


def test_cached_run_recomputes_when_the_config_changed(tmp_path, fresh_stale_list):
    common.cached_run(tmp_path, "cell", counting_run(1)[0], config={"lr": 1})
    run, calls = counting_run(2)
    assert common.cached_run(tmp_path, "cell", run, config={"lr": 2}) == {"value": 2}
    assert len(calls) == 1


def test_cells_from_other_library_code_are_reused_but_flagged(tmp_path, scratch, fresh_stale_list, monkeypatch):
    common.cached_run(tmp_path, "cell", counting_run(1)[0], **WHOLE_LIBRARY)
    (tmp_path / "legacy.json").write_text('{"value": 0}')  # written before cells carried a stamp
    monkeypatch.setattr(common, "library_fingerprint", lambda: "other-code")
    run, calls = counting_run(2)
    assert common.cached_run(tmp_path, "cell", run) == {"value": 1}
    assert common.cached_run(tmp_path, "legacy", run) == {"value": 0}
    assert calls == [] and len(common.STALE_CELLS) == 2
    path = common.publish("bench", "text", quick=True)
    assert "2 cached cell(s)" in path.read_text() and f"`{tmp_path}/`: 2 cell(s)" in path.read_text()
    assert common.cached_run(tmp_path, "cell", run, force=True) == {"value": 2}


def test_refresh_stale_recomputes_only_cells_other_code_computed(tmp_path, fresh_stale_list, monkeypatch):
    common.cached_run(tmp_path, "old", counting_run(1)[0], **WHOLE_LIBRARY)
    monkeypatch.setattr(common, "library_fingerprint", lambda: "new-code")
    common.cached_run(tmp_path, "new", counting_run(1)[0], **WHOLE_LIBRARY)
    monkeypatch.setattr(common, "REFRESH_STALE", True)
    assert not common.is_cached(tmp_path / "old.json") and common.is_cached(tmp_path / "new.json")
    run, calls = counting_run(2)
    assert common.cached_run(tmp_path, "old", run, **WHOLE_LIBRARY) == {"value": 2} and calls == [1]
    assert common.cached_run(tmp_path, "new", run, **WHOLE_LIBRARY) == {"value": 1} and calls == [1]
    assert common.cached_run(tmp_path, "old", run, **WHOLE_LIBRARY) == {"value": 2} and calls == [1]  # resumable
    assert common.STALE_CELLS == []


def test_library_fingerprint_follows_the_source(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(common, "LIBRARY_DIR", tmp_path)
    common.library_fingerprint.cache_clear()
    before = common.library_fingerprint()
    (tmp_path / "a.py").write_text("x = 2\n")
    common.library_fingerprint.cache_clear()  # cached per process: a benchmark's source does not change mid-run
    assert common.library_fingerprint() != before
    common.library_fingerprint.cache_clear()


def test_a_task_reused_from_its_summary_flags_its_stale_cells(tmp_path, scratch, fresh_stale_list, monkeypatch):
    cache = common.RESULTS_DIR / "sweep" / "task"
    common.cached_run(cache, "fresh", counting_run(1)[0])
    (cache / "legacy.json").write_text('{"value": 0}')
    common.write_json_atomic(cache / "summary.json", {"mean": 1})
    monkeypatch.setattr(common, "is_finished", lambda path: True)
    sections = common.task_sections(
        [("task", "agents/x", None)],
        "sweep",
        "not this one",
        run=None,
        section=lambda name, summary: f"{name}: {summary['mean']}",
    )
    assert sections == ["task: 1"] and common.STALE_CELLS == ["sweep/task/legacy.json"]


def test_task_cache_keeps_the_timing_of_the_invocation_that_computed(tmp_path, fresh_stale_list):
    """A rerun that only reads cached cells must not record its own near-zero wall time."""
    summary = tmp_path / "summary.json"
    first = common.TaskCache(tmp_path)
    assert first("a", lambda: {"x": 1}) == {"x": 1} and first("b", lambda: {"x": 2}) == {"x": 2}
    assert (first.n_computed, first.resumed) == (2, False)
    summary.write_text('{"wall_time_s": 123.0, "resumed": false}')

    cache_only = common.TaskCache(tmp_path)
    assert cache_only("a", lambda: pytest.fail("cached")) == {"x": 1}
    assert cache_only.timing(summary) == {"wall_time_s": 123.0, "resumed": False}

    partial = common.TaskCache(tmp_path)
    partial("a", lambda: pytest.fail("cached"))
    partial("c", lambda: {"x": 3})
    timing = partial.timing(summary)
    assert timing["resumed"] is True and timing["wall_time_s"] < 123.0, "it computed a cell: its own timing"

    forced = common.TaskCache(tmp_path, force=True)
    assert forced("a", lambda: {"x": 10}) == {"x": 10} and not forced.resumed


def test_distill_checks_force_with_only_recomputes_just_the_selected_rows(monkeypatch):
    """`distill_checks.py --force --only dqn` reruns the DQN checks and keeps every other cached row."""
    import distill_checks

    forced = {}

    def fake_cached_run(cache, name, run, force=False, config=None):
        forced[name] = force
        row = dict.fromkeys(["teacher_return_mean", "teacher_return_std", "student_return_mean"], 1.0)
        row |= dict.fromkeys(["student_return_std", "pct_of_teacher", "param_fraction", "wall_time_s"], 1.0)
        row |= {"env_id": "E", "teacher_algo": "A", "loss": "kl", "temperature": 1.0, "student_return_ci95": [0, 1]}
        return row | {"student_params": 1, "teacher_params": 1, "n_teacher_transitions": 1}

    monkeypatch.setattr(distill_checks, "cached_run", fake_cached_run)
    monkeypatch.setattr(distill_checks, "publish", lambda *a, **k: None)
    monkeypatch.setattr(distill_checks, "publish_demo", lambda *a, **k: None)
    monkeypatch.setattr(sys, "argv", ["distill_checks.py", "--quick", "--force", "--only", "dqn"])
    distill_checks.main()
    assert forced, "no check ran"
    assert {name for name, f in forced.items() if f} == {name for name in forced if "dqn" in name} != set()


def test_library_fingerprint_ignores_comments_docstrings_and_layout_but_not_code():
    base = 'def f(x):\n    """Doc."""\n    return x + 1  # add one\n'
    same = "def f(x):\n    # a comment\n    return (x +\n            1)\n"
    assert common.code_of(base) == common.code_of(same)
    assert common.code_of(base) != common.code_of('def f(x):\n    """Doc."""\n    return x + 2\n')
    assert common.code_of('"""Module doc."""\nX = 1\n') == common.code_of("X = 1\n")


def test_where_cells_run_is_not_part_of_a_cells_config_fingerprint():
    """A sweep benchmark rerun with --backend ray reads the cells a local run stored, and the reverse."""
    from policykd.jobs.sweep import SweepConfig

    local = SweepConfig(teacher="agents/ppo/CartPole-v1_1", temperatures=(1.0, 2.0))
    assert common.config_fingerprint(dataclasses.replace(local, backend="ray", ray_address="auto")) == (
        common.config_fingerprint(local)
    )
    assert common.config_fingerprint(dataclasses.replace(local, temperatures=(1.0,))) != common.config_fingerprint(
        local
    )


def test_a_readme_block_of_stale_results_is_withheld(scratch, fresh_stale_list, monkeypatch):
    """After a library change, `run_all.py --withhold-stale` (and any script that reused stale cells)
    replaces the README blocks quoting them by a line saying so; blocks of current results stay."""
    monkeypatch.setattr(common, "README_BLOCKS", {"table": "bench", "other": "fresh"})
    (scratch / "README.md").write_text(
        "<!-- table:start -->\n| 1.0 |\n<!-- table:end -->\n<!-- other:start -->\n| 2.0 |\n<!-- other:end -->\n"
    )
    (scratch / "results" / "bench").mkdir(parents=True)
    (scratch / "results" / "bench" / "cell.json").write_text('{"value": 1, "_cache": {"library": "old-code"}}')
    monkeypatch.setattr(common, "library_fingerprint", lambda: "new-code")
    common.cached_run(scratch / "results" / "fresh" / "full", "cell", counting_run(2)[0])
    assert [p.name for p in common.stale_cells("bench")] == ["cell.json"] and common.stale_cells("fresh") == []
    assert common.withhold_stale_blocks() == ["table"]
    text = (scratch / "README.md").read_text()
    assert "<!-- table:start -->\nWithheld until rerun: 1 cached cell(s)" in text and "| 1.0 |" not in text
    assert "| 2.0 |" in text
    # a script that reused a stale cell withholds its own block when it publishes
    common.cached_run(scratch / "results" / "bench", "cell", counting_run(3)[0])
    common.publish("bench", "text", quick=False, readme_marker="other", readme_text="| 3.0 |")
    assert "| 3.0 |" not in (scratch / "README.md").read_text()


def test_a_cell_that_set_the_former_default_loss_keeps_its_config_fingerprint():
    """DistillConfig.loss became None (picked for the teacher: kl, or mse for a deterministic one): a
    cached cell that passed loss="kl", then the default, keeps the stamps it was written with."""
    from policykd.jobs.config import DistillConfig

    dqn = DistillConfig(teacher="agents/dqn/CartPole-v1_1", loss="kl", temperature=0.01)
    assert common.config_fingerprint(dqn) == "386d05447261"  # its hash when kl was the default
    assert common.config_fingerprint(dataclasses.replace(dqn, loss=None)) == "386d05447261"
    assert common.config_fingerprint(dataclasses.replace(dqn, loss="mse")) != "386d05447261"
    assert common.legacy_fingerprint(DistillConfig(teacher="x")) == "0a80a4e7f528"  # stamped before 2026-12-01


def test_a_no_preset_row_on_other_seeds_names_them_and_is_met_only_so_far():
    """no_preset's header names the seeds most rows ran; a row run on fewer names its seeds, and
    its goal reads "yes (so far)" until it has as many."""
    import no_preset

    def row(expert: str, seeds: list[int], pct: float) -> dict:
        return {"expert": expert, "kind": "categorical", "hidden_sizes": (30, 30), "student_params": 1_000,
                "teacher_params": 4_000, "param_fraction": 0.25, "n_transitions": 50_000, "n_updates": 10_000,
                "loss": "kl", "temperatures": [1.0] * len(seeds), "seeds": seeds,
                "pct_mean_ci": (pct, pct - 1, pct + 1)}  # fmt: skip

    rows = [row("ppo/CartPole-v1_1", [0, 1, 2], 100.0), row("dqn/Acrobot-v1_1", [0, 1, 2], 99.0),
            row("ppo/PongNoFrameskip-v4_1", [0], 98.0)]  # fmt: skip
    assert no_preset.usual_seeds(rows) == [0, 1, 2]
    lines = no_preset.table(rows, []).splitlines()
    assert lines[2].endswith("| 100.0 [99.0, 101.0] | yes |")
    assert lines[4].endswith("| 98.0 (seed 0) | yes (so far) |")
