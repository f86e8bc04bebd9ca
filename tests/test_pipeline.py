"""distill() end to end on the shipped CartPole PPO expert: the run folder, TensorBoard tags,
learning, determinism, never overwriting a run, and training from a saved buffer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from safetensors.torch import load_file

from policykd.data.buffers import LabelledBuffer
from policykd.errors import PolicyKDError
from policykd.jobs import distill as pipeline
from policykd.jobs.collect import collect
from policykd.jobs.config import CollectConfig, DistillConfig
from policykd.jobs.distill import distill
from policykd.learn.students import Student
from policykd.types import TeacherOutput

REQUIRED_KEYS = (
    "env_id",
    "loss",
    "temperature",
    "teacher_return_mean",
    "teacher_return_std",
    "student_return_mean",
    "student_return_std",
    "student_return_ci95",
    "pct_of_teacher",
    "teacher_params",
    "student_params",
    "n_teacher_transitions",
    "wall_time_s",
    "seed",
)
TRAIN_TAGS = {
    "losses/distill",
    "teacher/entropy",
    "student/entropy",
    "distill/kl_teacher_student",
    "distill/action_agreement",
    "charts/SPS",
}
EVAL_TAGS = {"eval/student_return", "eval/pct_of_teacher"}
RANDOM_CARTPOLE_RETURN = 22.0  # a uniformly random CartPole policy averages about 22


def small_config(expert: Path | None, out_dir: Path | None, **overrides) -> DistillConfig:
    """2,000 transitions, 300 updates, 3 evaluation episodes; ``overrides`` replace any field."""
    kwargs = dict(
        teacher=None if expert is None else str(expert),
        n_transitions=2_000,
        n_updates=300,
        n_eval_episodes=3,
        seed=0,
        out_dir=None if out_dir is None else str(out_dir),
        progress_bar=False,
    )
    return DistillConfig(**{**kwargs, **overrides})


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def reproducible_numbers(summary: dict) -> dict[str, float]:
    """Everything in a summary that depends on the seed only (not timings)."""
    metrics = {k: v for k, v in summary["final_train_metrics"].items() if k not in ("charts/SPS", "train/wall_time_s")}
    keys = (
        "teacher_return_mean",
        "teacher_return_std",
        "student_return_mean",
        "student_return_std",
        "pct_of_teacher",
        "n_teacher_transitions",
        "student_params",
    )
    return {**{k: summary[k] for k in keys}, **metrics}


def student_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(out_dir / "student" / "student.safetensors")


# -- one run with a moderate budget ---------------------------------------------------------------


def test_summary_has_every_required_key(cartpole_distill_run):
    summary, out_dir = cartpole_distill_run
    on_disk = json.loads((out_dir / "summary.json").read_text())
    assert on_disk == summary
    missing = [key for key in REQUIRED_KEYS if key not in on_disk]
    assert not missing, f"summary.json lacks {missing}"
    assert on_disk["env_id"] == "CartPole-v1"
    assert on_disk["loss"] == "kl" and on_disk["temperature"] == 1.0 and on_disk["seed"] == 0
    assert on_disk["n_teacher_transitions"] == 5_000
    assert 0 < on_disk["student_params"] < on_disk["teacher_params"]
    assert on_disk["wall_time_s"] > 0
    for who in ("student", "teacher"):  # Student-t over the 3 episodes: mean ± t(0.975, 2) std / sqrt(3)
        low, high = on_disk[f"{who}_return_ci95"]
        half = 4.302652729911275 * on_disk[f"{who}_return_std"] / np.sqrt(3)
        assert on_disk["n_eval_episodes"] == 3
        assert low == pytest.approx(on_disk[f"{who}_return_mean"] - half) and high == pytest.approx(low + 2 * half)
    random_mean = on_disk["random_return_mean"]
    assert 5 < random_mean < 60  # CartPole's random policy lasts ~22 steps
    pct = 100 * (on_disk["student_return_mean"] - random_mean) / (on_disk["teacher_return_mean"] - random_mean)
    assert on_disk["pct_of_teacher"] == pytest.approx(pct)
    raw = 100 * on_disk["student_return_mean"] / on_disk["teacher_return_mean"]
    assert on_disk["pct_of_teacher_raw"] == pytest.approx(raw)  # CartPole's returns are never negative
    assert all(math.isfinite(on_disk[key]) for key in REQUIRED_KEYS if isinstance(on_disk[key], float))


def test_student_folder_is_loadable_without_pickle(cartpole_distill_run):
    _, out_dir = cartpole_distill_run
    student_dir = out_dir / "student"
    assert {"student.safetensors", "student.json", "recipe.json"} <= {p.name for p in student_dir.iterdir()}
    state = load_file(student_dir / "student.safetensors")  # no pickle
    assert set(state) >= {"obs_mean", "obs_std", "head.weight", "head.bias"}
    assert json.loads((student_dir / "recipe.json").read_text())["env_id"] == "CartPole-v1"
    student = Student.load(student_dir)
    assert student.config.head == "discrete" and student.config.action_dim == 2


def test_tensorboard_has_the_tag_vocabulary(cartpole_distill_run):
    _, out_dir = cartpole_distill_run
    logged = scalars(out_dir / "tb")
    assert TRAIN_TAGS | EVAL_TAGS <= set(logged)
    assert [step for step, _ in logged["losses/distill"]][-1] == 500
    # --eval-every 250: evaluated after updates 250 and 500, once each
    assert [step for step, _ in logged["eval/student_return"]] == [250, 500]
    assert all(0.0 <= value <= 1.0 for _, value in logged["distill/action_agreement"])


def test_the_student_learns(cartpole_distill_run):
    summary, out_dir = cartpole_distill_run
    assert summary["teacher_return_mean"] > 400
    assert summary["student_return_mean"] > 5 * RANDOM_CARTPOLE_RETURN
    logged = scalars(out_dir / "tb")
    kl = [value for _, value in logged["distill/kl_teacher_student"]]
    agreement = [value for _, value in logged["distill/action_agreement"]]
    assert kl[-1] < 0.5 * kl[0]
    assert agreement[-1] > 0.8
    assert logged["eval/student_return"][-1][1] == pytest.approx(summary["student_return_mean"])


# -- seeds ------------------------------------------------------------------------------------------


@pytest.mark.expensive
def test_same_seed_same_numbers_other_seed_differs(cartpole_expert_dir, tmp_path):
    first = distill(small_config(cartpole_expert_dir, tmp_path / "a"))
    again = distill(small_config(cartpole_expert_dir, tmp_path / "b"))
    other = distill(small_config(cartpole_expert_dir, tmp_path / "c", seed=1))
    assert reproducible_numbers(again) == reproducible_numbers(first)
    weights_a, weights_b = student_weights(tmp_path / "a"), student_weights(tmp_path / "b")
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)
    assert other["seed"] == 1
    assert reproducible_numbers(other) != reproducible_numbers(first)
    weights_c = student_weights(tmp_path / "c")
    assert any(not torch.equal(weights_a[name], weights_c[name]) for name in weights_a)


# -- the run folder -----------------------------------------------------------------------------------


def test_default_out_dir_never_overwrites_a_run(cartpole_expert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "runs" / "CartPole-v1" / "kl-tau1-seed0"
    earlier.mkdir(parents=True)
    (earlier / "summary.json").write_text('{"earlier": true}')
    (earlier.with_name("kl-tau1-seed0-2")).mkdir()
    summary = distill(small_config(cartpole_expert_dir, None, n_transitions=800, n_updates=50))
    assert Path(summary["out_dir"]) == Path("runs/CartPole-v1/kl-tau1-seed0-3")
    assert (tmp_path / summary["out_dir"] / "summary.json").is_file()
    assert json.loads((earlier / "summary.json").read_text()) == {"earlier": True}
    assert list(earlier.with_name("kl-tau1-seed0-2").iterdir()) == []


def test_distill_from_a_saved_buffer(cartpole_expert_dir, tmp_path, monkeypatch):
    buffer, stats, teacher = collect(CollectConfig(teacher=str(cartpole_expert_dir), n_transitions=2_000, seed=3))
    path = tmp_path / "buffer.npz"
    buffer.save(path)

    def no_collection(*args, **kwargs):
        raise AssertionError("distill --buffer must not collect")

    monkeypatch.setattr(pipeline, "collect", no_collection)
    with pytest.raises(PolicyKDError, match=f"--teacher {cartpole_expert_dir}"):  # named by the header, not loaded
        distill(small_config(None, tmp_path / "run", buffer=str(path)))
    summary = distill(small_config(cartpole_expert_dir, tmp_path / "run", buffer=str(path)))
    assert summary["n_teacher_transitions"] == len(buffer) == 2_000
    assert summary["teacher"] == teacher.source == str(cartpole_expert_dir)
    assert summary["n_updates"] == 300
    assert (tmp_path / "run" / "student" / "student.safetensors").is_file()


def _tiny_buffer(observation_shape: tuple[int, ...], meta: dict | None) -> LabelledBuffer:
    n = 8
    out = TeacherOutput("categorical", logits=torch.zeros(n, 2), value=torch.zeros(n))
    space = spaces.Box(-1, 1, observation_shape, np.float32)
    buffer = LabelledBuffer.for_teachers(n, space, spaces.Discrete(2), [out], meta=meta)
    buffer.add(
        np.zeros((n, *observation_shape), np.float32),
        np.zeros(n, np.int64),
        np.zeros(n),
        np.zeros(n, bool),
        np.zeros(n, bool),
        np.ones(n, bool),
        0,
        [out],
    )
    return buffer


@pytest.mark.parametrize(
    ("observation_shape", "meta", "teacher", "message"),
    [
        ((4,), None, None, "does not record its teacher"),
        ((6,), None, "expert", "holds observations"),
    ],
)
def test_a_buffer_that_does_not_fit_is_refused_before_writing(
    cartpole_expert_dir, tmp_path, observation_shape, meta, teacher, message
):
    path = tmp_path / "buffer.npz"
    _tiny_buffer(observation_shape, meta).save(path)
    teacher_source = str(cartpole_expert_dir) if teacher == "expert" else None
    with pytest.raises(PolicyKDError, match=message):
        distill(small_config(cartpole_expert_dir, tmp_path / "run", teacher=teacher_source, buffer=str(path)))
    assert not (tmp_path / "run").exists()
