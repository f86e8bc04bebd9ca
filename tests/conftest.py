"""Shared fixtures. Each block says which tests use it; keep fixtures small and named for what they build."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

# -- SB3 experts (test_teachers.py, test_hub.py) --------------------------------------------------


@pytest.fixture(scope="session")
def sb3_expert(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Any, Path]]:
    """``sb3_expert(algo, env_id, **kwargs) -> (model, zip_path)``: an untrained SB3 / sb3-contrib
    model whose policy weights are jittered (so log-stds, biases and critics are not at their
    initial constants), saved once per session. Equal arguments return the same model and zip."""
    from sb3_contrib import QRDQN, TRPO
    from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3

    classes = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "qrdqn": QRDQN, "sac": SAC, "td3": TD3, "ddpg": DDPG, "trpo": TRPO}
    root = tmp_path_factory.mktemp("sb3_experts")
    cache: dict[str, tuple[Any, Path]] = {}

    def make(algo: str, env_id: str, **kwargs: Any) -> tuple[Any, Path]:
        key = f"{algo}-{env_id}-{sorted(kwargs.items())}"
        if key not in cache:
            kwargs.setdefault("policy", "MlpPolicy")
            if algo in ("dqn", "qrdqn", "sac", "td3", "ddpg"):
                kwargs.setdefault("buffer_size", 1_000)  # no 1M-transition replay buffer for an untrained model
            model = classes[algo](env=env_id, seed=0, device="cpu", **kwargs)
            generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))  # same weights in any test order
            with torch.no_grad():
                for param in model.policy.parameters():
                    param.add_(0.3 * torch.randn(param.shape, generator=generator))
            path = root / f"{len(cache)}-{algo}-{env_id}.zip"
            model.save(path)
            cache[key] = (model, path)
        return cache[key]

    return make


@pytest.fixture
def zoo_run_dir() -> Callable[..., Path]:
    """``zoo_run_dir(root, algo, env_id, zip_path, config=..., args=..., ordered=False) -> run dir``:
    lays out ``root/<algo>/<EnvId>_1/<EnvId>.zip`` + ``<EnvId>/config.yml`` (+ ``args.yml``) the way
    rl-zoo does. ``ordered=True`` writes the YAML as rl_zoo3 does, with OrderedDict python tags."""
    from collections import OrderedDict

    def make(
        root: Path,
        algo: str,
        env_id: str,
        zip_path: Path,
        config: dict[str, Any] | None = None,
        args: dict[str, Any] | None = None,
        ordered: bool = False,
    ) -> Path:
        run_dir = root / algo / f"{env_id}_1"
        params_dir = run_dir / env_id
        params_dir.mkdir(parents=True)
        (run_dir / f"{env_id}.zip").write_bytes(Path(zip_path).read_bytes())
        for name, content in (
            ("config.yml", config if config is not None else {"policy": "MlpPolicy"}),
            ("args.yml", args),
        ):
            if content is None:
                continue
            if ordered:
                content = OrderedDict((key, content[key]) for key in sorted(content))
            (params_dir / name).write_text(yaml.dump(content))
        return run_dir

    return make


# -- The shipped CartPole PPO expert and one small distillation run ------------------------------
# (test_pipeline.py, test_cli.py, test_collect.py)


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread() -> Iterator[None]:
    """Tiny MLPs run several times faster on one intra-op thread than on two contended cores
    (the CI box trains experts in the background), so every test uses one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BENCHMARK_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.fixture(scope="session", autouse=True)
def benchmark_results_untouched() -> Iterator[None]:
    """No test writes into the committed benchmark results (a traced cell once left its code map in
    benchmarks/results/code): tests publish into tmp_path. A benchmark run beside the tests trips it too."""
    before = set(BENCHMARK_RESULTS.rglob("*"))
    yield
    added = sorted(str(p.relative_to(BENCHMARK_RESULTS)) for p in set(BENCHMARK_RESULTS.rglob("*")) - before)
    assert not added, f"tests wrote into benchmarks/results: {added[:5]}; point them at tmp_path"


@pytest.fixture(scope="session")
def cartpole_expert_dir() -> Path:
    """The shipped rl-zoo folder ``agents/ppo/CartPole-v1_1`` (PPO, scores 500)."""
    from policykd.zoo.presets import ZOO_DIR

    run_dir = ZOO_DIR / "ppo" / "CartPole-v1_1"
    if not (run_dir / "CartPole-v1.zip").is_file():
        pytest.skip(f"the shipped expert {run_dir} is missing")
    return run_dir


@pytest.fixture(scope="session")
def cartpole_teacher(cartpole_expert_dir: Path) -> Any:
    """The shipped CartPole PPO expert loaded as a categorical Teacher."""
    from policykd.data.teachers import load_teacher

    return load_teacher(cartpole_expert_dir)


@pytest.fixture(scope="session")
def cartpole_distill_run(tmp_path_factory: pytest.TempPathFactory, cartpole_expert_dir: Path) -> tuple[dict, Path]:
    """``(summary, out_dir)`` of one ``distill`` of the shipped expert with a moderate budget
    (5,000 transitions, 500 updates, evaluations after updates 250 and 500 over 3 episodes)."""
    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import distill

    out_dir = tmp_path_factory.mktemp("distill") / "run"
    config = DistillConfig(
        teacher=str(cartpole_expert_dir),
        n_transitions=5_000,
        n_updates=500,
        n_eval_episodes=3,
        eval_every=250,
        seed=0,
        out_dir=str(out_dir),
        progress_bar=False,
    )
    return distill(config), out_dir
