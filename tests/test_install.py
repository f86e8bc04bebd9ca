"""Install anywhere: the wheel carries the env presets (envs/ ships as the package
policykd._presets), and an installed policykd run from another directory lists the presets and
distils the shipped CartPole expert found through ``POLICYKD_ZOO``.

The end-to-end test builds the wheel offline (no build isolation), installs it with ``--no-deps``
into a target folder, and runs a fresh venv's interpreter with that folder and this environment's
site-packages (for torch, SB3 ...) on its path: no network, no copy of the dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_wheels_package_list_covers_every_package_of_ours():
    """pyproject lists the packages by hand (the presets' mapping needs it): none may be missing."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    ours = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "policykd").rglob("__init__.py")} - {""}
    assert ours <= set(config["packages"]), ours - set(config["packages"])
    assert config["package-dir"] == {"policykd._presets": "envs"}
    assert {"policykd._presets", "policykd._presets.hyperparams"} <= set(config["packages"])


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """``(python, env, target)``: a fresh venv's interpreter, the environment under which it
    imports policykd from the wheel installed into ``target`` (its dependencies from this one)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy, so the build leaves no build/ or *.egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("policykd", "envs"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    env.pop("PYTHONPATH", None)
    built = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(source)], root, env)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("policykd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "policykd/_presets/CartPole-v1.yml" in names and "policykd/_presets/hyperparams/ppo.yml" in names
    target = root / "site"
    installed = _run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], root, env)
    assert installed.returncode == 0, installed.stderr
    venv = _run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], root, env)
    assert venv.returncode == 0, venv.stderr
    run_env = {**env, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])}
    run_env.pop("POLICYKD_ZOO", None)
    return root / "venv" / "bin" / "python", run_env, target


@pytest.mark.expensive
def test_an_installed_wheel_lists_presets_and_distils_from_another_directory(installed, tmp_path):
    python, env, target = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import sys, policykd\n"
        "from policykd.zoo.presets import hyperparams_path, presets_dir\n"
        "print(policykd.__file__, sys.prefix, presets_dir() / 'CartPole-v1.yml', hyperparams_path('ppo').is_file())"
    )
    where = _run([str(python), "-c", probe], elsewhere, env)
    assert where.returncode == 0, where.stderr
    package, prefix, presets, hyperparams = where.stdout.split()
    assert Path(package) == target / "policykd" / "__init__.py" and Path(prefix) == python.parents[1]
    assert Path(presets) == target / "policykd/_presets/CartPole-v1.yml" and hyperparams == "True"  # the wheel's

    # no zoo: the error says where it looked and what to pass
    cli = [str(python), "-m", "policykd.cli"]
    tiny = ["--n-transitions", "300", "--n-updates", "5", "--batch-size", "32", "--hidden", "8", "--eval-episodes", "1"]
    lost = _run([*cli, "distill", *tiny], elsewhere, env)
    assert lost.returncode == 2 and lost.stderr.count("\n") == 1, lost.stderr
    assert "no expert zoo was found" in lost.stderr and "POLICYKD_ZOO" in lost.stderr

    env = {**env, "POLICYKD_ZOO": str(REPO / "agents")}
    listed = _run([*cli, "zoo"], elsewhere, env)
    assert listed.returncode == 0, listed.stderr
    assert "CartPole-v1, HalfCheetah-v5" in listed.stdout and "| ppo   | CartPole-v1 " in listed.stdout
    distilled = _run([*cli, "distill", *tiny, "--out", "run", "-q"], elsewhere, env)
    assert distilled.returncode == 0, distilled.stderr
    assert (elsewhere / "run" / "summary.json").is_file() and (elsewhere / "run" / "student").is_dir()
    assert "CartPole-v1: ppo teacher -> student" in distilled.stdout
