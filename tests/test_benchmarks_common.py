"""The benchmarks' shared plumbing: a --quick run never overwrites the full run's results or the
README sections that quote them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:start -->\nold\n<!-- table:end -->\nrest\n")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(common, "README", readme)
    return tmp_path


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
