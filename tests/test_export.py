"""policykd export: the ONNX file acts as the student does, for every head, and refuses clearly."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import onnxruntime as ort
import pytest
import torch

from policykd.errors import PolicyKDError
from policykd.jobs.export import OnnxPolicy, check_onnx, export_onnx
from policykd.learn.students import Student, make_student

BOX_OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
BOX_ACTIONS = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
HEADS = {
    "categorical": (BOX_OBS, gym.spaces.Discrete(4)),
    "gaussian": (BOX_OBS, BOX_ACTIONS),  # clipped to the bounds
    "squashed_gaussian": (BOX_OBS, BOX_ACTIONS),  # tanh, rescaled
    "deterministic": (BOX_OBS, BOX_ACTIONS),
}


def _student(tmp_path, teacher_kind, observation_space, action_space, **kwargs) -> Student:
    """A freshly initialised student, normalising its inputs with mean 0..4 and std 2, saved to
    ``tmp_path/student``. Its logits and means spread out: no head output saturates."""
    torch.manual_seed(0)
    student = make_student(
        teacher_kind, observation_space, action_space, obs_mean=np.arange(5.0), obs_std=np.full(5, 2.0), **kwargs
    )
    student.save(tmp_path / "student")
    return student


def _head_outputs(student: Student, obs: np.ndarray) -> np.ndarray:
    """What the greedy action is taken from: logits, the Gaussian mean or the deterministic action."""
    with torch.no_grad():
        out = student(torch.as_tensor(obs))
    return {"discrete": out.logits, "gaussian": out.mean, "deterministic": out.action}[out.kind].numpy()


@pytest.mark.parametrize("teacher_kind", list(HEADS))
def test_the_onnx_file_acts_as_the_student(tmp_path, teacher_kind):
    student = _student(tmp_path, teacher_kind, *HEADS[teacher_kind], hidden_sizes=(16,))
    report = export_onnx(tmp_path / "student", tmp_path / "policy.onnx")
    assert report.n_checked == 256 and report.max_abs_diff <= 1e-4 and report.size_bytes > 0

    # batch sizes other than the traced one, observations around the normalisation
    session = ort.InferenceSession(str(tmp_path / "policy.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7, 200):
        obs = np.random.default_rng(batch).normal(2.0, 6.0, (batch, 5)).astype(np.float32)
        exported, exported_outputs = session.run(["actions", "head_outputs"], {"observations": obs})
        expected, expected_outputs = student.act(obs), _head_outputs(student, obs)
        assert exported.shape == expected.shape and exported_outputs.shape == expected_outputs.shape
        np.testing.assert_allclose(exported_outputs, expected_outputs, rtol=1e-5, atol=1e-5)
        if teacher_kind == "categorical":
            assert exported.dtype == np.int64 and (exported == expected).all()
        else:
            assert np.allclose(exported, expected, atol=1e-5)
            assert (exported >= BOX_ACTIONS.low - 1e-6).all() and (exported <= BOX_ACTIONS.high + 1e-6).all()
    # the outputs are spread out: a graph that dropped a layer or the normalisation could not match them
    assert expected_outputs.std(axis=0).min() > 0.05
    if teacher_kind == "categorical":
        assert len(np.unique(expected)) >= 3  # not one action for every observation
    else:  # most actions inside the bounds, not all sitting on the clip or squash limits
        inside = (expected > BOX_ACTIONS.low + 1e-3) & (expected < BOX_ACTIONS.high - 1e-3)
        assert inside.mean() > 0.5

    # the check compares head outputs, not only actions: a head bias moved by 1e-3 changes almost no
    # greedy action, yet the file no longer computes what the student computes
    with torch.no_grad():
        student.head.bias.add_(1e-3)
    if teacher_kind == "categorical":
        assert (OnnxPolicy(tmp_path / "policy.onnx").act(obs) == student.act(obs)).mean() > 0.9
    with pytest.raises(PolicyKDError, match="picks other actions than the student"):
        check_onnx(tmp_path / "policy.onnx", student)


def test_the_graph_clips_normalised_inputs_as_the_student(tmp_path):
    """A student of a VecNormalize teacher clips its normalised inputs at ±clip_obs; so does its
    exported file, on observations far beyond the clip (they are part of the export's check)."""
    student = _student(tmp_path, "gaussian", *HEADS["gaussian"], hidden_sizes=(16,), obs_clip=1.5)
    report = export_onnx(tmp_path / "student", tmp_path / "policy.onnx")
    assert report.max_abs_diff <= 1e-4
    obs = np.arange(5.0) + np.random.default_rng(3).choice([-1, 1], (64, 5)) * np.linspace(0, 40, 64)[:, None]
    obs = obs.astype(np.float32)
    _, exported_outputs = OnnxPolicy(tmp_path / "policy.onnx").run(obs)
    np.testing.assert_allclose(exported_outputs, _head_outputs(student, obs), rtol=1e-5, atol=1e-5)
    unclipped = Student(dataclasses.replace(student.config, obs_clip=None))
    unclipped.load_state_dict(student.state_dict())
    assert not np.allclose(exported_outputs, _head_outputs(unclipped, obs), atol=1e-3)
    beyond = np.full((2, 5), 1e3, np.float32) * [[1], [1e3]]  # both clip to the same input
    np.testing.assert_allclose(*OnnxPolicy(tmp_path / "policy.onnx").run(beyond)[1], rtol=1e-6)


@pytest.mark.expensive
def test_an_image_student_exports_with_uint8_input(tmp_path):
    obs_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    torch.manual_seed(0)
    make_student("q_values", obs_space, gym.spaces.Discrete(6), cnn_width=0.25).save(tmp_path / "student")
    report = export_onnx(tmp_path / "student", tmp_path / "policy.onnx", n_check=32)
    assert report.n_checked == 32 and report.max_abs_diff <= 1e-4  # logits compared within the tolerance
    session = ort.InferenceSession(str(tmp_path / "policy.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"


def test_a_file_that_acts_otherwise_is_refused(tmp_path):
    _student(tmp_path, "categorical", *HEADS["categorical"], hidden_sizes=(16,))
    export_onnx(tmp_path / "student", tmp_path / "policy.onnx")
    torch.manual_seed(1)
    other = make_student("categorical", *HEADS["categorical"], hidden_sizes=(16,))
    with pytest.raises(PolicyKDError, match="picks other actions than the student"):
        check_onnx(tmp_path / "policy.onnx", other)


def test_export_errors_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch):
    import importlib.util

    from policykd.cli import main
    from policykd.learn.multitask import TaskSpace, make_multitask_student

    _student(tmp_path, "categorical", *HEADS["categorical"], hidden_sizes=(16,))
    tasks = {
        "CartPole-v1": TaskSpace("categorical", *HEADS["categorical"]),
        "Pendulum-v1": TaskSpace("gaussian", *HEADS["gaussian"]),
    }
    make_multitask_student(tasks, hidden_sizes=(8,), seed=0).save(tmp_path / "multi")
    cases = [
        ([str(tmp_path)], "is not a policykd student"),
        # issue 17: a multi-task student exports one task at a time (--env), no longer refused as a whole
        ([str(tmp_path / "multi")], "is a multi-task student (tasks: CartPole-v1, Pendulum-v1); pick one with --env"),
        (
            [str(tmp_path / "multi"), "--env", "Acrobot-v1"],
            "unknown task 'Acrobot-v1'; this student knows CartPole-v1, Pendulum-v1",
        ),
        ([str(tmp_path / "student"), "--out", str(tmp_path / "policy.pt")], "must end in .onnx"),
        ([str(tmp_path / "student"), "--format", "sb3", "--out", str(tmp_path / "policy.onnx")], "must end in .zip"),
        (
            [str(tmp_path / "student"), "--format", "hub"],
            "--format hub writes the measured table of a `policykd distill` run",
        ),
    ]
    for argv, fragment in cases:
        with pytest.raises(SystemExit) as exit_:
            main(["export", *argv])
        assert exit_.value.code != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a)
    )
    with pytest.raises(PolicyKDError, match=r"needs onnxruntime: pip install 'policykd\[onnx\]'"):
        export_onnx(tmp_path / "student", tmp_path / "policy.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi", "student"]


def _balancing_cartpole_student() -> Student:
    """A CartPole student whose action depends on its observation: push towards where the pole
    falls (angle + angular velocity). It balances for 500 steps; always-left or always-right
    policies last about 10."""
    cartpole = gym.make("CartPole-v1")
    torch.manual_seed(0)
    student = make_student("categorical", cartpole.observation_space, cartpole.action_space, hidden_sizes=(2,))
    with torch.no_grad():
        hidden = student.trunk[1][0]
        hidden.weight.copy_(torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, -1.0, -1.0]]))
        hidden.bias.zero_()
        student.head.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
        student.head.bias.zero_()
    return student


def test_policykd_evaluate_plays_the_onnx_file_as_the_student(tmp_path, capsys):
    """The file carries the student's config and env recipe: `policykd evaluate policy.onnx` needs
    nothing else, and on the same seed it scores exactly what the student folder scores."""
    from policykd.cli import main
    from policykd.data.envs import EnvRecipe
    from policykd.fileio import write_json_atomic

    student = _balancing_cartpole_student()
    student.save(tmp_path / "student")
    write_json_atomic(tmp_path / "student" / "recipe.json", EnvRecipe("CartPole-v1").to_json())
    export_onnx(tmp_path / "student", tmp_path / "elsewhere" / "policy.onnx")
    (tmp_path / "student" / "recipe.json").unlink()  # the file alone must be enough
    obs = np.random.default_rng(0).normal(0.0, 0.1, (64, 4)).astype(np.float32)
    actions = OnnxPolicy(tmp_path / "elsewhere" / "policy.onnx").act(obs)
    assert set(actions.tolist()) == {0, 1} and (actions == student.act(obs)).all()

    scores = []
    for source, extra in (
        (tmp_path / "elsewhere" / "policy.onnx", []),
        (tmp_path / "student", ["--env", "CartPole-v1"]),
    ):
        main(["evaluate", str(source), "--episodes", "3", "--seed", "5", *extra])
        scores.append(capsys.readouterr().out.split(": return ")[1].split(" over")[0])
    assert scores[0] == scores[1]
    assert float(scores[0].split()[0]) > 100  # a constant action scores ~10: the file really balances the pole

    for argv, fragment in (
        ([str(tmp_path / "elsewhere" / "policy.onnx"), "--stochastic"], "acts greedily only; drop --stochastic"),
        ([str(tmp_path / "elsewhere" / "policy.onnx"), "--env", "Acrobot-v1"], "is for CartPole-v1, not Acrobot-v1"),
        ([str(tmp_path / "missing.onnx")], "is not a readable ONNX file"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["evaluate", *argv])
        assert exit_.value.code != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
