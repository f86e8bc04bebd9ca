"""Videos (issue 17): ``evaluate --video DIR`` and ``distill --video`` write one non-empty mp4 per
episode, of the episodes evaluation plays on the same seeds; refusals come before anything runs,
and nothing renders without ``--video``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from PIL import Image

from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.errors import PolicyKDError
from policykd.fileio import write_json_atomic
from policykd.jobs.evaluate import episode_returns
from policykd.jobs.video import check_video_support, record_episodes
from policykd.learn.students import Student, make_student

pytest.importorskip("moviepy")
ATARI = ["stable_baselines3.common.atari_wrappers.AtariWrapper"]


def _student(folder: Path | None, recipe: EnvRecipe, seed: int = 4) -> Student:
    """An untrained student of ``recipe``'s env (short episodes of varied length), saved with its
    recipe when ``folder`` is given."""
    venv = make_vec_env(recipe, 1, 0)
    obs_space, action_space = venv.observation_space, venv.action_space
    venv.close()
    kind = "categorical" if isinstance(action_space, gym.spaces.Discrete) else "gaussian"
    student = make_student(kind, obs_space, action_space, hidden_sizes=(8,), cnn_width=0.25, seed=seed)
    if folder is not None:
        student.save(folder)
        write_json_atomic(folder / "recipe.json", recipe.to_json())
    return student


def _leaning_student(folder: Path) -> Student:
    """A CartPole student that pushes the way the pole leans: episodes of 25 to 50 steps, varied
    enough for frame counts (moviepy's are exact to one frame) to tell them apart."""
    cartpole = gym.make("CartPole-v1")
    student = make_student("categorical", cartpole.observation_space, cartpole.action_space, hidden_sizes=(), seed=0)
    with torch.no_grad():
        student.head.weight.zero_()
        student.head.bias.zero_()
        student.head.weight[:, 2] = torch.tensor([-1.0, 1.0])  # logits -theta, +theta
    student.save(folder)
    write_json_atomic(folder / "recipe.json", EnvRecipe("CartPole-v1").to_json())
    return student


def _n_frames(path: Path) -> int:
    import imageio.v2 as imageio

    return imageio.get_reader(path, "ffmpeg").count_frames()


def _cartpole_lengths(policy: Student, n: int, seed: int) -> list[int]:
    """Lengths of the first ``n`` episodes env 0 plays from ``seed`` (a CartPole return is its length)."""
    return [
        int(r) for r in episode_returns(lambda obs: policy.act(obs), EnvRecipe("CartPole-v1"), n, seed=seed, n_envs=1)
    ]


def test_evaluate_video_records_the_evaluated_episodes(tmp_path, capsys):
    from policykd.cli import main

    student = _leaning_student(tmp_path / "student")
    video = ["--video", str(tmp_path / "vid"), "--video-episodes", "2", "--gif"]
    main(["evaluate", str(tmp_path / "student"), "--episodes", "3", "--episode-seed", "0", *video])
    out = capsys.readouterr().out
    assert "videos (the first 2 episode(s) of env 0, seed 0)" in out and ".gif" in out
    paths = [tmp_path / "vid" / f"student-episode-{k}.{ext}" for k in range(2) for ext in ("gif", "mp4")]
    assert sorted(tmp_path.joinpath("vid").iterdir()) == paths and all(p.stat().st_size > 0 for p in paths)
    lengths = _cartpole_lengths(student, 2, seed=0)
    assert abs(lengths[0] - lengths[1]) > 2  # so the check below tells the episodes apart
    for k, length in enumerate(lengths):
        assert abs(_n_frames(paths[2 * k + 1]) - (length + 1)) <= 1  # the reset frame, then one per step
        with Image.open(paths[2 * k]) as gif:  # README-sized, every frame kept
            assert gif.size[0] == 320 and abs(gif.n_frames - (length + 1)) <= 1
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path / "student"), "--gif"])
    assert "--gif converts the videos of --video DIR; add --video DIR" in capsys.readouterr().err


def test_the_python_api_records_a_loaded_student(tmp_path):
    """README's quick-start: load_student, then record_episodes on the recipe it carries."""
    import policykd

    student = _leaning_student(tmp_path / "student")
    policy = policykd.load_student(tmp_path / "student")
    (path,) = policykd.record_episodes(policy, policy.recipe, tmp_path / "vid", name="student", seed=3)
    (length,) = _cartpole_lengths(student, 1, seed=3)
    assert path == tmp_path / "vid" / "student-episode-0.mp4" and abs(_n_frames(path) - (length + 1)) <= 1


def test_distill_video_records_teacher_and_student_on_the_evaluation_seeds(tmp_path, capsys, sb3_expert):
    """A tiny run with an untrained teacher (short episodes): both videos are the first episode of
    env 0 on the evaluation seed, and the hub folder ships the student's as replay.mp4."""
    from policykd.cli import main
    from policykd.data.teachers import load_teacher
    from policykd.jobs.evaluate import EVAL_SEED_OFFSET
    from policykd.jobs.export_hub import export_hub

    _, teacher_zip = sb3_expert("ppo", "CartPole-v1")
    run = tmp_path / "run"
    budgets = "--n-transitions 256 --n-updates 5 --batch-size 32 --eval-episodes 2 --hidden 8 --no-progress".split()
    argv = ["distill", "--teacher", str(teacher_zip), "--env", "CartPole-v1", *budgets, "--out", str(run), "--video"]
    main([*argv, "--no-teacher-check"])  # the untrained teacher is no better than a random policy
    assert "videos (teacher and student, same episodes)" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["videos"] == ["videos/teacher-episode-0.mp4", "videos/student-episode-0.mp4"]
    seed = EVAL_SEED_OFFSET  # --seed 0
    players = {"teacher": load_teacher(teacher_zip, env_id="CartPole-v1"), "student": Student.load(run / "student")}
    for name, player in players.items():
        (length,) = _cartpole_lengths(player, 1, seed=seed)
        assert abs(_n_frames(run / "videos" / f"{name}-episode-0.mp4") - (length + 1)) <= 1

    hub = export_hub(run, tmp_path / "hub")
    assert "replay.mp4" in hub.files
    assert (tmp_path / "hub" / "replay.mp4").read_bytes() == (run / "videos" / "student-episode-0.mp4").read_bytes()


def test_video_refusals_come_first_and_nothing_renders_without_video(tmp_path, capsys, monkeypatch):
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    from policykd.cli import main

    _student(tmp_path / "student", EnvRecipe("CartPole-v1"))

    def no_pygame(self):
        raise gym.error.DependencyNotInstalled("pygame is not installed")

    monkeypatch.setattr(CartPoleEnv, "render", no_pygame)
    main(["evaluate", str(tmp_path / "student"), "--episodes", "2"])  # no --video: no frame drawn
    assert "over 2 episodes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path / "student"), "--episodes", "2", "--video", str(tmp_path / "vid")])
    err = capsys.readouterr().err.strip().splitlines()
    reason = "(DependencyNotInstalled: pygame is not installed); install the env's rendering extra"
    assert len(err) == 1 and f"CartPole-v1 cannot render frames here {reason}" in err[0]
    assert not (tmp_path / "vid").exists()
    monkeypatch.undo()

    with pytest.raises(PolicyKDError, match="--video-episodes must be an integer >= 1, got 0"):
        check_video_support(EnvRecipe("CartPole-v1"), 0)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "moviepy" else find_spec(name, *a)
    )
    with pytest.raises(PolicyKDError, match=r"--video needs moviepy: pip install 'policykd\[video\]'"):
        check_video_support(EnvRecipe("CartPole-v1"))


@pytest.mark.parametrize(
    "module, recipe",
    [
        ("Box2D", EnvRecipe("LunarLander-v3")),
        ("ale_py", EnvRecipe("PongNoFrameskip-v4", {"max_episode_steps": 60}, ATARI, frame_stack=4)),
        ("mujoco", EnvRecipe("Hopper-v5", {"max_episode_steps": 10, "width": 64, "height": 64})),
    ],
    ids=["box2d", "atari", "mujoco"],
)
def test_each_domain_renders_headless(tmp_path, module, recipe):
    """Box2D (pygame), Atari (the emulator, under AtariWrapper and a frame stack: whole games),
    MuJoCo (EGL unless MUJOCO_GL says otherwise), kept short with a step limit."""
    pytest.importorskip(module)
    try:
        check_video_support(recipe)
    except PolicyKDError as err:
        if module != "mujoco":
            raise
        pytest.skip(f"no off-screen OpenGL here: {err}")
    student = _student(None, recipe)
    (path,) = record_episodes(student, recipe, tmp_path, name="student", n_episodes=1, seed=0)
    assert path.stat().st_size > 0 and _n_frames(path) > 1
    if module != "Box2D":  # capped episodes: the reset frame and one per raw env step
        assert abs(_n_frames(path) - (recipe.env_kwargs["max_episode_steps"] + 1)) <= 1
