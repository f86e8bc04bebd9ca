"""Videos of policies playing: ``policykd evaluate --video DIR`` and ``policykd distill --video``.

Each episode is recorded by gymnasium's ``RecordVideo`` (``rgb_array`` frames, written as mp4 by
moviepy) wrapped around the bare env, under Monitor and the zoo wrappers: an Atari video holds a
whole game, not one life, at the emulator's frame rate. The env is seeded ``seed``, as env 0 of
``evaluate_policy``: a greedy policy's video k is the k-th episode that env plays in evaluation,
and the teacher's and the student's videos of a run start from the same states.

Nothing here runs, and nothing renders, unless a video is asked for. Off-screen rendering: classic
control and Box2D draw with pygame; MuJoCo needs OpenGL without a display, through EGL or OSMesa
(``MUJOCO_GL=egl`` / ``osmesa``): on Linux without a display, ``MUJOCO_GL`` defaults to ``egl``
here (and pygame's ``SDL_VIDEODRIVER`` to ``dummy``); Atari frames come from the emulator.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from policykd.checks import check_int
from policykd.data.envs import EnvRecipe, env_action_masks, make_vec_env
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.fileio import atomic_path
from policykd.jobs.evaluate import Policy

VIDEOS_DIR = "videos"  # in a run folder
GIF_WIDTH = 320  # pixels: a README's animation, not a recording
VIDEO_INSTALL_HINT = "pip install 'policykd[video]' (moviepy)"
RENDER_HINT = {
    "mujoco": "MuJoCo renders off-screen through EGL or OSMesa: set MUJOCO_GL=egl (or osmesa) and install that library",
    "other": "install the env's rendering extra, e.g. pip install 'gymnasium[classic-control]' or 'gymnasium[box2d]'",
}


def check_video_support(recipe: EnvRecipe, n_episodes: int = 1) -> None:
    """Refuse a video in one line before anything long runs: a bad episode count, no moviepy, or
    an env that cannot render a frame here (one reset and one frame are drawn to find out)."""
    check_int("--video-episodes", n_episodes)
    if importlib.util.find_spec("moviepy") is None:
        raise PolicyKDError(f"--video needs moviepy: {VIDEO_INSTALL_HINT}")
    _default_headless_gl()
    venv = make_vec_env(recipe, 1, 0)
    try:
        venv.reset()
        frame = venv.envs[0].render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3:
            raise TypeError(f"render() gave {type(frame).__name__}, not an RGB image")
    except Exception as err:  # noqa: BLE001 - pygame, OpenGL and the emulators raise their own types
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        hint = RENDER_HINT["mujoco" if "mujoco" in type(venv.envs[0].unwrapped).__module__ else "other"]
        raise PolicyKDError(f"{recipe.env_id} cannot render frames here ({reason}); {hint}") from None
    finally:
        venv.close()


def record_episodes(
    policy: Policy,
    recipe: EnvRecipe,
    folder: str | Path,
    *,
    name: str,
    n_episodes: int = 1,
    seed: int = 0,
    deterministic: bool = True,
    gif: bool = False,
) -> list[Path]:
    """Play ``n_episodes`` of ``recipe``'s env (seeded ``seed``) with ``policy`` and write each as
    ``folder/<name>-episode-<k>.mp4`` (and, with ``gif``, ``.gif``: :func:`write_gif`); returns
    those paths. Sampled actions (``deterministic`` False) draw from a generator seeded ``seed``,
    as in ``evaluate_policy``."""
    from gymnasium.wrappers import RecordVideo

    check_int("--video-episodes", n_episodes)
    _default_headless_gl()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def recorder(env: Any) -> Any:
        with warnings.catch_warnings():  # "overwriting existing videos": the files are named per episode
            warnings.simplefilter("ignore")
            return RecordVideo(
                env, str(folder), episode_trigger=lambda k: k < n_episodes, name_prefix=name, disable_logger=True
            )

    venv = make_vec_env(recipe, 1, seed, wrap_base=recorder)
    rng = np.random.default_rng(seed)
    try:
        observations, finished = venv.reset(), 0
        while finished < n_episodes:
            masks = env_action_masks(venv)  # an env with action masks (MaskablePPO's): obeyed, as in evaluation
            act = {} if masks is None else {"action_masks": masks}
            observations, _, _, infos = venv.step(policy.act(observations, deterministic, rng, **act))
            finished += sum("episode" in info for info in infos)  # Monitor's: whole episodes only
    finally:
        venv.close()  # the last episode's file is written when its env resets or closes
    paths = [folder / f"{name}-episode-{k}.mp4" for k in range(n_episodes)]
    missing = [str(p) for p in paths if not p.is_file() or p.stat().st_size == 0]
    if missing:
        raise PolicyKDError(f"no video was written to {', '.join(missing)}; check that moviepy can write mp4 (ffmpeg)")
    return [*paths, *(write_gif(path) for path in paths)] if gif else paths


def write_gif(mp4: Path, width: int = GIF_WIDTH) -> Path:
    """``mp4`` as an animated GIF next to it, at most ``width`` pixels wide (for a README); every
    frame is kept, so a long episode makes a slow conversion and a large file."""
    from moviepy import VideoFileClip

    with VideoFileClip(str(mp4)) as clip, atomic_path(mp4.with_suffix(".gif"), suffix=".gif") as tmp:
        (clip.resized(width=width) if clip.w > width else clip).write_gif(str(tmp), logger=None)
    return mp4.with_suffix(".gif")


def record_teacher_and_student(
    teacher: Policy,
    student: Policy,
    recipe: EnvRecipe,
    folder: str | Path,
    *,
    n_episodes: int,
    seed: int,
    deterministic: bool = True,
) -> list[Path]:
    """``teacher-episode-<k>.mp4`` and ``student-episode-<k>.mp4`` on the same episode seeds."""
    return [
        path
        for who, policy in (("teacher", teacher), ("student", student))
        for path in record_episodes(
            policy, recipe, folder, name=who, n_episodes=n_episodes, seed=seed, deterministic=deterministic
        )
    ]


def record_run_videos(
    out_dir: Path, teachers: Mapping[str, tuple[Teacher, bool]], *, n_episodes: int, seed: int
) -> list[str]:
    """``policykd distill --video``: each task's teacher and the run's saved student (``out_dir/
    student``), greedy or not as the task is evaluated (``teachers``: task -> (teacher,
    deterministic)), into ``out_dir/videos`` (``videos/<task>`` for several tasks). Returns the
    files, relative to ``out_dir``."""
    from policykd.learn.multitask import MultiTaskStudent
    from policykd.learn.students import Student

    several = len(teachers) > 1
    student: Any = MultiTaskStudent.load(out_dir / "student") if several else Student.load(out_dir / "student")
    paths = []
    for task, (teacher, deterministic) in teachers.items():
        folder = out_dir / VIDEOS_DIR / task_folder_name(task) if several else out_dir / VIDEOS_DIR
        policy = student.task_policy(task) if several else student
        paths += record_teacher_and_student(
            teacher, policy, teacher.recipe, folder, n_episodes=n_episodes, seed=seed, deterministic=deterministic
        )
    return [str(path.relative_to(out_dir)) for path in paths]


def task_folder_name(task: str) -> str:
    """A task's env id as one folder name (``ALE/Pong-v5`` -> ``ALE-Pong-v5``, as the hub writes it)."""
    return task.replace("/", "-")


def _default_headless_gl() -> None:
    """On Linux without a display, MuJoCo renders through EGL and pygame (SDL) draws off-screen,
    unless MUJOCO_GL / SDL_VIDEODRIVER say otherwise."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
