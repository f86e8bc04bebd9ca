"""``policykd --help`` answers at once: importing the command line loads no heavy library (torch,
gymnasium, SB3, scipy, tensorboard), and every subcommand's help prints. A wall-time assertion
would be flaky on a loaded machine, so the imports are what is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from policykd.cli import _commands

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "gymnasium", "stable_baselines3", "sb3_contrib", "scipy", "tensorboard", "numpy", "yaml", "tqdm")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)


def test_importing_the_command_line_loads_no_heavy_library() -> None:
    probe = "import sys, json, policykd, policykd.cli; print(json.dumps(sorted(sys.modules)))"
    result = _python(probe)
    assert result.returncode == 0, result.stderr
    loaded = {name.split(".")[0] for name in json.loads(result.stdout)}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_help_of_every_command_loads_no_heavy_library() -> None:
    """Each ``policykd <cmd> --help`` exits 0, prints its options, and imports nothing heavy."""
    probe = (
        "import sys, json\n"
        "from policykd.cli import main\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit_:\n"
        "        assert exit_.code == 0, (argv, exit_.code)\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    argvs = [["--help"], *([name, "--help"] for name in _commands())]
    result = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(argvs)], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("usage: policykd") == len(argvs)
    for option in ("--no-progress", "--quiet", "--verbose", "--config"):
        assert result.stdout.count(option) >= len(argvs) - 1, option  # every subcommand lists it
    loaded = {name.split(".")[0] for name in json.loads(result.stderr.strip().splitlines()[-1])}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_python_m_policykd_cli_help_prints_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "policykd.cli", "--help"], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for name in _commands():
        assert name in result.stdout


def test_the_lazy_package_exports_resolve() -> None:
    """Every name in ``policykd.__all__`` resolves (its module is imported on first use)."""
    result = _python(
        "import sys, policykd\n"
        "assert 'torch' not in sys.modules\n"
        "missing = [n for n in policykd.__all__ if getattr(policykd, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert 'torch' in sys.modules\n"
        "from policykd import distill, DistillConfig\n"
        "print(distill.__module__, DistillConfig.__module__)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["policykd.jobs.distill", "policykd.jobs.config"]
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        import policykd

        policykd.nothing_here  # noqa: B018
