"""train_expert: the rl-zoo layout, a stripped optimiser, resuming after an interruption, the
per-run lock and refusing to retrain a finished expert. Tiny budgets: these check plumbing, not
scores."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import policykd.zoo.experts as experts
from policykd.errors import PolicyKDError
from policykd.fileio import read_json, write_json_atomic
from policykd.zoo.experts import train_expert
from policykd.zoo.layout import RECORD_FILE, RESUME_DIR
from policykd.zoo.presets import ZOO_DIR

TINY = dict(n_timesteps=2_000, checkpoint_every=512, n_eval_episodes=1, progress_bar=False)


class Interrupted(Exception):
    """Stands in for a kill: raised from inside a training call."""


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_expert("ppo", "CartPole-v1", zoo_dir=tmp_path_factory.mktemp("zoo"), **TINY)


@pytest.fixture
def captured_checkpoints(monkeypatch: pytest.MonkeyPatch) -> list:
    """The ResumableCheckpoint callbacks train_expert builds, each with ``start_timesteps``: the
    step count training (re)started from."""
    callbacks: list = []
    make = experts._ResumableCheckpoint.make

    def capturing_make(**kwargs):
        callback = make(**kwargs)
        on_start = callback._on_training_start

        def record_start() -> None:
            callback.start_timesteps = callback.num_timesteps  # set from the model just before this hook
            on_start()

        callback._on_training_start = record_start
        callbacks.append(callback)
        return callback

    monkeypatch.setattr(experts._ResumableCheckpoint, "make", staticmethod(capturing_make))
    return callbacks


def test_rl_zoo_layout(ppo_run):
    assert ppo_run.name == "CartPole-v1_1" and ppo_run.parent.name == "ppo"
    assert (ppo_run / "CartPole-v1.zip").is_file()
    config = yaml.safe_load((ppo_run / "CartPole-v1" / "config.yml").read_text())
    args = yaml.safe_load((ppo_run / "CartPole-v1" / "args.yml").read_text())
    assert isinstance(config, dict) and config["policy"] == "MlpPolicy" and config["n_envs"] == 8
    assert args["algo"] == "ppo" and args["env"] == "CartPole-v1" and args["n_timesteps"] == 2_000
    record = read_json(ppo_run / RECORD_FILE)
    assert record["status"] == "finished" and record["algo"] == "ppo" and record["env_id"] == "CartPole-v1"
    assert record["n_timesteps"] >= 2_000
    assert {"torch", "stable_baselines3", "gymnasium", "python"} <= set(record["versions"])
    assert record["hyperparams"]["n_steps"] == 32
    assert record["wall_time_s"] >= 0 and record["eval_history"]
    assert record["resumed_at"] == []
    assert all(note.startswith("shipped the ") for note in record["notes"]), "only a checkpoint selection, no resume"
    assert record["machine"].endswith("torch threads, cpu"), "the default device, and the record says so"
    assert not (ppo_run / RESUME_DIR).exists(), "the resume checkpoint is removed once the expert is shipped"


@pytest.mark.parametrize("which", ["trained here", "shipped"])
def test_optimizer_state_is_stripped_and_the_model_still_loads(ppo_run, which):
    from stable_baselines3 import PPO
    from stable_baselines3.common.save_util import load_from_zip_file

    run_dir = ppo_run if which == "trained here" else ZOO_DIR / "ppo" / "CartPole-v1_1"
    zip_path = run_dir / "CartPole-v1.zip"
    if not zip_path.is_file():
        pytest.skip(f"{zip_path} is missing")
    _, params, _ = load_from_zip_file(zip_path, device="cpu")
    assert params["policy.optimizer"]["state"] == {}
    assert params["policy.optimizer"]["param_groups"], "param groups are kept so the zip still loads"
    model = PPO.load(zip_path, device="cpu")
    action, _ = model.predict(np.zeros((3, 4), np.float32), deterministic=True)
    assert action.shape == (3,) and set(action.tolist()) <= {0, 1}


def test_a_finished_expert_is_not_retrained(ppo_run):
    with pytest.raises(PolicyKDError, match="already holds a finished expert"):
        train_expert("ppo", "CartPole-v1", zoo_dir=ppo_run.parent.parent, **TINY)


def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    run_dir = tmp_path / "ppo" / "CartPole-v1_1"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(run_dir / '.train.lock')!r}, 'w'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(PolicyKDError, match="being trained by another process"):
            train_expert("ppo", "CartPole-v1", zoo_dir=tmp_path, **TINY)
    finally:
        holder.kill()
        holder.wait()
    assert not (run_dir / RECORD_FILE).exists()


@pytest.mark.expensive
def test_an_interrupted_dqn_run_resumes(tmp_path, monkeypatch, captured_checkpoints):
    """Killed right after its first checkpoint, a DQN run resumes from it: the step count
    continues, learning waits for the emptied replay buffer to refill, expert.json says so."""
    kwargs = dict(
        zoo_dir=tmp_path,
        n_timesteps=1_600,
        checkpoint_every=500,
        n_eval_episodes=1,
        progress_bar=False,
        hyperparams={"gradient_steps": 8},
    )
    write_json = experts.write_json_atomic

    def write_then_die(path, data):
        write_json(path, data)
        if Path(path).name == "progress.json":
            raise Interrupted

    monkeypatch.setattr(experts, "write_json_atomic", write_then_die)
    with pytest.raises(Interrupted):
        train_expert("dqn", "CartPole-v1", **kwargs)
    run_dir = tmp_path / "dqn" / "CartPole-v1_1"
    assert (run_dir / RESUME_DIR / "model.zip").is_file()
    assert read_json(run_dir / RESUME_DIR / "progress.json")["num_timesteps"] == 500
    assert not (run_dir / RECORD_FILE).exists()

    monkeypatch.setattr(experts, "write_json_atomic", write_json)
    train_expert("dqn", "CartPole-v1", **kwargs)
    resumed = captured_checkpoints[-1]
    assert resumed.start_timesteps == 500, "num_timesteps continues from the checkpoint"
    assert resumed.model.learning_starts == 500 + 1_000  # rl-zoo's learning_starts for DQN CartPole
    assert resumed.model.num_timesteps >= 1_600
    record = read_json(run_dir / RECORD_FILE)
    assert record["status"] == "finished" and record["resumed_at"] == [500]
    assert record["n_timesteps"] == resumed.model.num_timesteps
    assert any("emptied replay buffer" in note for note in record["notes"])
    assert [step for step, _ in record["eval_history"]][0] == 500
    assert not (run_dir / RESUME_DIR).exists()


STOPPED_RUN = dict(n_timesteps=512, checkpoint_every=256, n_eval_episodes=1, progress_bar=False)


def _stop_after_last_checkpoint(zoo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Train a 512-step PPO CartPole into ``zoo_dir`` and kill it between its last checkpoint
    (256 and 512 steps) and shipping; returns its ``resume/`` folder."""

    def die(model):
        raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(experts, "strip_optimizer_state", die)
        with pytest.raises(Interrupted):
            train_expert("ppo", "CartPole-v1", zoo_dir=zoo_dir, **STOPPED_RUN)
    return zoo_dir / "ppo" / "CartPole-v1_1" / RESUME_DIR


@pytest.mark.expensive
def test_a_run_stopped_after_its_last_checkpoint_still_ships(tmp_path, monkeypatch, captured_checkpoints):
    """Stopped between the final checkpoint and shipping, the rerun has nothing left to learn
    and ships the checkpoint (it used to fail: its callback had never been given the model)."""
    run_dir = _stop_after_last_checkpoint(tmp_path, monkeypatch).parent
    assert read_json(run_dir / RESUME_DIR / "progress.json")["num_timesteps"] == 512

    train_expert("ppo", "CartPole-v1", zoo_dir=tmp_path, **STOPPED_RUN)
    record = read_json(run_dir / RECORD_FILE)
    assert record["status"] == "finished" and record["n_timesteps"] == 512 and record["resumed_at"] == [512]
    assert all(note.startswith("shipped the ") for note in record["notes"]), "no refill note: PPO has no buffer"
    assert (run_dir / "CartPole-v1.zip").is_file() and not (run_dir / RESUME_DIR).exists()


def test_a_resume_without_its_best_checkpoint_ships_the_final_one(tmp_path, monkeypatch):
    """A resume committed without best/ (to keep the repository light) still ships, says so, and
    ships the final weights even though the lost best evaluation was higher."""
    resume = _stop_after_last_checkpoint(tmp_path, monkeypatch)
    progress = read_json(resume / "progress.json")
    write_json_atomic(resume / "progress.json", {**progress, "best_eval": 1e9, "best_timesteps": 256})
    shutil.rmtree(resume / "best", ignore_errors=True)
    record = read_json(train_expert("ppo", "CartPole-v1", zoo_dir=tmp_path, **STOPPED_RUN) / RECORD_FILE)
    assert record["shipped_checkpoint"] == "final" and record["shipped_timesteps"] == 512
    assert any("best checkpoint" in note and "not kept" in note for note in record["notes"])


def test_best_and_final_checkpoints_are_rescored_before_one_ships(tmp_path, monkeypatch):
    """A noisy in-training evaluation does not pick the shipped checkpoint: both are re-scored by
    the zoo's protocol, the higher ships, and its score is the one recorded (and reproducible)."""
    from policykd.zoo.scoring import measure_expert

    resume = _stop_after_last_checkpoint(tmp_path, monkeypatch)
    # best/ claims a huge in-training evaluation but always pushes left (CartPole falls in ~10 steps);
    # the final weights balance the pole with the textbook rule "push towards where it leans".
    _cartpole_rule(resume / "model.zip", "always_left").save(resume / "best" / "model.zip")
    _cartpole_rule(resume / "model.zip", "balance").save(resume / "model.zip")
    progress = read_json(resume / "progress.json")
    write_json_atomic(resume / "progress.json", {**progress, "best_eval": 1e9, "best_timesteps": 256})

    run_dir = train_expert("ppo", "CartPole-v1", zoo_dir=tmp_path, selection_episodes=5, **STOPPED_RUN)
    record = read_json(run_dir / RECORD_FILE)
    selection = record["checkpoint_selection"]
    assert selection["best"]["timesteps"] == 256 and selection["final"]["timesteps"] == 512
    assert selection["best"]["score"]["mean"] < 12 and selection["final"]["score"]["mean"] > 100
    assert record["shipped_checkpoint"] == "final" and record["shipped_timesteps"] == 512
    assert record["score"] == selection["final"]["score"] and record["score"]["n_episodes"] == 5
    assert any("re-scored over 5 episodes" in note for note in record["notes"])
    assert measure_expert(run_dir, n_episodes=5, seed=record["score"]["seed"]) == record["score"]


def _cartpole_rule(zip_path: Path, rule: str):
    """A PPO CartPole policy set by hand: ``always_left``, or ``balance`` (push right when
    pole angle + angular velocity > 0; tanh keeps the sign through the hidden layers)."""
    from stable_baselines3 import PPO

    model = PPO.load(zip_path, device="cpu")
    first, second = model.policy.mlp_extractor.policy_net[0], model.policy.mlp_extractor.policy_net[2]
    head = model.policy.action_net
    with torch.no_grad():
        for layer in (first, second, head):
            layer.weight.zero_()
            layer.bias.zero_()
        if rule == "always_left":
            head.bias.copy_(torch.tensor([100.0, -100.0]))
        else:
            first.weight[0, 2:] = 10.0  # angle and angular velocity
            second.weight[0, 0] = 10.0
            head.weight[:, 0] = torch.tensor([-100.0, 100.0])
    return model


def test_train_expert_cli_errors_are_one_line(ppo_run, capsys):
    from policykd.cli import main

    zoo_dir = str(ppo_run.parent.parent)
    for argv, fragment in (
        (["--algo", "ppo", "--env", "CartPole-v1"], "already holds a finished expert; pass another --run-id"),
        (["--algo", "nope", "--env", "CartPole-v1"], "unknown algo 'nope'"),
        (["--algo", "ppo", "--env", "CartPole-v1", "--run-id", "2", "--device", "gpu"], "unknown device 'gpu'"),
        (
            ["--algo", "ppo", "--env", "CartPole-v1", "--run-id", "2", "--selection-episodes", "-1"],
            "selection episodes must be >= 0",
        ),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["train-expert", *argv, "--zoo-dir", zoo_dir, "--n-timesteps", "2000"])
        assert exit_.value.code != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("policykd train-expert: error: ") and fragment in err[0], err
    assert not (ppo_run.parent.parent / "nope").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algo": "nope"}, "unknown algo 'nope'"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"selection_episodes": -1}, "selection episodes must be >= 0"),
        ({"selection_episodes": 2.5}, "selection_episodes"),
        ({"seed": -1}, "seed"),
        ({"n_timesteps": 1.5}, "n_timesteps"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"n_eval_episodes": -1}, "n_eval_episodes"),
        ({"run_id": 0}, "run_id"),
        ({"run_id": True}, "run_id"),
    ],
)
def test_an_expert_request_is_checked_in_one_place(overrides, message, tmp_path):
    with pytest.raises(PolicyKDError, match=message):
        experts.ExpertRequest(**{"algo": "ppo", "env_id": "CartPole-v1", **overrides})
    with pytest.raises(PolicyKDError, match=message):  # train_expert refuses it before touching the zoo folder
        train_expert(**{"algo": "ppo", "env_id": "CartPole-v1", "zoo_dir": tmp_path, **overrides})
    assert not any(tmp_path.iterdir())


def test_an_expert_request_records_the_command_that_trains_it():
    request = experts.ExpertRequest("dqn", "CartPole-v1", seed=1, selection_episodes=0, n_eval_episodes=0)
    assert request.command == "policykd train-expert --algo dqn --env CartPole-v1 --seed 1"
    budget = experts.ExpertRequest("ppo", "Pendulum-v1", n_timesteps=5_000)
    assert budget.command == "policykd train-expert --algo ppo --env Pendulum-v1 --seed 0 --n-timesteps 5000"
    with pytest.raises(dataclasses.FrozenInstanceError):
        budget.seed = 3  # type: ignore[misc]


def test_the_zoo_layout_names_run_folders_and_finished_experts(tmp_path):
    from policykd.zoo.layout import is_finished, run_dir_for

    run_dir = run_dir_for(tmp_path, "ppo", "CartPole-v1", 2)
    assert run_dir == tmp_path / "ppo" / "CartPole-v1_2"
    assert run_dir_for(str(tmp_path), "ppo", "CartPole-v1") == tmp_path / "ppo" / "CartPole-v1_1"
    assert not is_finished(run_dir)
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / RECORD_FILE, {"status": "training"})
    assert not is_finished(run_dir)
    write_json_atomic(run_dir / RECORD_FILE, {"status": "finished"})
    assert is_finished(run_dir)


def test_record_score_rewrites_only_the_score(tmp_path):
    from policykd.jobs.evaluate import ReturnStats
    from policykd.zoo.scoring import record_score, score_entry

    write_json_atomic(tmp_path / RECORD_FILE, {"algo": "ppo", "notes": ["kept"], "score": {"mean": 1.0}})
    score = score_entry(ReturnStats.of([10.0, 12.0]), seed=3, deterministic=False)
    assert score == {**ReturnStats.of([10.0, 12.0]).to_json(), "seed": 3, "deterministic": False}
    assert score["mean"] == 11.0 and score["n_episodes"] == 2
    assert record_score(tmp_path, score) == tmp_path / RECORD_FILE
    assert read_json(tmp_path / RECORD_FILE) == {"algo": "ppo", "notes": ["kept"], "score": score}
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE], "written atomically: no temporary left"
    with pytest.raises(PolicyKDError, match="has none"):
        record_score(tmp_path / "elsewhere", score)


def test_measure_expert_plays_the_zoo_folder_and_records_its_score(cartpole_expert_dir, tmp_path):
    from policykd.data.teachers import load_teacher
    from policykd.jobs.evaluate import evaluate_policy
    from policykd.zoo.scoring import measure_expert

    run_dir = tmp_path / "ppo" / "CartPole-v1_1"
    shutil.copytree(cartpole_expert_dir, run_dir, ignore=shutil.ignore_patterns("train_logs", "resume"))
    before = read_json(run_dir / RECORD_FILE)
    score = measure_expert(run_dir, n_episodes=2, seed=5)
    teacher = load_teacher(cartpole_expert_dir)
    stats = evaluate_policy(teacher, teacher.recipe, 2, seed=5, deterministic=True)
    assert score["mean"] == stats.mean and score["n_episodes"] == 2 and score["seed"] == 5 and score["deterministic"]
    assert read_json(run_dir / RECORD_FILE) == {**before, "score": score}


def test_the_zoo_modules_import_no_cycle():
    """layout imports nothing of the zoo; scoring and the catalog import layout, never experts."""
    import ast

    zoo = Path(experts.__file__).parent
    imported = {}
    for name in ("layout", "scoring", "catalog", "experts"):
        tree = ast.parse((zoo / f"{name}.py").read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported[name] = {m.rsplit(".", 1)[1] for m in modules if m.startswith("policykd.zoo.")}
    assert imported["layout"] == set()
    assert imported["scoring"] == {"layout", "presets"} and imported["catalog"] == {"layout", "presets"}
    assert imported["experts"] == {"layout", "scoring", "presets"}  # presets: the shipped envs/hyperparams
