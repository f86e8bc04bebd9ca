"""LabelledBuffer: ring layout, sampling, mixed teacher kinds, files without pickle."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from policykd.data.buffers import DRIVER_NAMES, DRIVER_STUDENT, DRIVER_TEACHER, LabelledBuffer
from policykd.errors import PolicyKDError
from policykd.types import KIND_FIELDS, TEACHER_FIELDS, TeacherOutput

N_ACTIONS = 3
OBS_SHAPE = (2, 4)


def categorical(n: int, offset: float) -> TeacherOutput:
    logits = offset + torch.arange(n * N_ACTIONS, dtype=torch.float32).reshape(n, N_ACTIONS)
    return TeacherOutput("categorical", logits=logits, value=logits.sum(1))


def q_values(n: int, offset: float) -> TeacherOutput:
    q = -offset - torch.arange(n * N_ACTIONS, dtype=torch.float32).reshape(n, N_ACTIONS)
    return TeacherOutput("q_values", q_values=q, value=q.max(1).values)


def make_buffer(capacity: int, kinds: tuple[str, ...] = ("categorical", "q_values"), **meta) -> LabelledBuffer:
    shapes = {"logits": (N_ACTIONS,), "q_values": (N_ACTIONS,), "value": ()}
    used = {f for kind in kinds for f in KIND_FIELDS[kind]}
    return LabelledBuffer(
        capacity,
        observation_shape=OBS_SHAPE,
        observation_dtype=np.uint8,
        action_shape=(),
        action_dtype=np.int64,
        teacher_kinds=kinds,
        teacher_field_shapes={f: s for f, s in shapes.items() if f in used},
        meta=meta or None,
    )


def add_step(buf: LabelledBuffer, step: int, n: int, driver: int = DRIVER_TEACHER) -> None:
    """n transitions whose contents all encode ``step`` (observations = step + env index)."""
    obs = (step * 10 + np.arange(n)[:, None, None] + np.zeros((n, *OBS_SHAPE))).astype(np.uint8)
    outputs = [{"categorical": categorical, "q_values": q_values}[kind](n, 100.0 * step) for kind in buf.teacher_kinds]
    buf.add(
        obs,
        np.full(n, step % N_ACTIONS),
        np.full(n, float(step)),
        np.arange(n) == 0,
        np.zeros(n, bool),
        np.full(n, step == 0),
        np.full(n, driver, np.int8),
        outputs,
    )


def test_ring_wraps_when_a_step_straddles_the_end() -> None:
    buf = make_buffer(5)
    add_step(buf, 0, 3)
    assert (len(buf), buf.pos, buf.full) == (3, 3, False)
    add_step(buf, 1, 3)  # rows 3, 4, then 0
    assert (len(buf), buf.pos, buf.full) == (5, 1, True)
    assert buf.column("rewards").tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert buf.column("observations")[:, 0, 0].tolist() == [12, 1, 2, 10, 11]
    assert buf.chronological_indices().tolist() == [1, 2, 3, 4, 0]


def test_more_rows_than_capacity_keeps_the_last_ones() -> None:
    buf = make_buffer(4)
    add_step(buf, 0, 1)
    add_step(buf, 1, 6)  # rows 1..6 mod 4: the last four (env 2..5) survive
    assert (buf.pos, buf.full) == (3, True)
    obs = buf.column("observations")[buf.chronological_indices(), 0, 0]
    assert obs.tolist() == [12, 13, 14, 15]


def test_sample_is_reproducible_with_the_same_seed() -> None:
    buf = make_buffer(64)
    for step in range(8):
        add_step(buf, step, 4)
    a = buf.sample(16, np.random.default_rng(0))
    b = buf.sample(16, np.random.default_rng(0))
    c = buf.sample(16, np.random.default_rng(1))
    assert torch.equal(a.observations, b.observations)
    assert torch.equal(a.teacher_outputs[0].logits, b.teacher_outputs[0].logits)
    assert not torch.equal(a.observations, c.observations)
    assert a.observations.dtype == torch.uint8 and a.observations.shape == (16, *OBS_SHAPE)
    assert a.actions.dtype == torch.int64 and a.actions.shape == (16,)
    assert a.rewards.dtype == torch.float32


def test_sample_only_draws_from_the_filled_part() -> None:
    buf = make_buffer(100)
    add_step(buf, 1, 3)
    batch = buf.sample(200, np.random.default_rng(0))
    assert set(batch.rewards.tolist()) == {1.0}


def test_sampled_teacher_outputs_match_what_was_added() -> None:
    buf = make_buffer(10)
    for step in range(4):  # 12 rows in a ring of 10: wraps
        add_step(buf, step, 3)
    batch = buf.batch_at(np.arange(len(buf)))
    for row in range(len(buf)):
        step, env = divmod(int(batch.observations[row, 0, 0]), 10)
        assert torch.equal(batch.teacher_outputs[0].logits[row], categorical(3, 100.0 * step).logits[env])
        assert torch.equal(batch.teacher_outputs[1].q_values[row], q_values(3, 100.0 * step).q_values[env])
        assert batch.teacher_outputs[1].value[row] == q_values(3, 100.0 * step).value[env]
        assert batch.actions[row] == step % N_ACTIONS


def test_mixed_kinds_store_nan_for_missing_fields_and_rebuild_per_kind() -> None:
    buf = make_buffer(8)
    add_step(buf, 1, 2)
    assert buf.column("teacher_logits").shape == (2, 2, N_ACTIONS)
    assert np.isnan(buf.column("teacher_logits")[:, 1]).all()  # the DQN teacher has no logits
    assert np.isnan(buf.column("teacher_q_values")[:, 0]).all()  # the PPO teacher has no Q-values
    assert not np.isnan(buf.column("teacher_value")).any()  # both give a value
    ppo, dqn = buf.sample(5, np.random.default_rng(0)).teacher_outputs
    assert (ppo.kind, dqn.kind) == ("categorical", "q_values")
    for out in (ppo, dqn):
        for field in TEACHER_FIELDS:
            tensor = getattr(out, field)
            assert (tensor is not None) == (field in KIND_FIELDS[out.kind])
            assert tensor is None or not torch.isnan(tensor).any()


def test_for_teachers_derives_layout_from_spaces_and_outputs() -> None:
    obs_space = spaces.Box(0, 255, (84, 84, 4), np.uint8)
    quantiles = torch.zeros(2, 25, 6)
    outputs = [
        TeacherOutput("quantiles", q_values=quantiles.mean(1), quantiles=quantiles, value=torch.zeros(2)),
        TeacherOutput("categorical", logits=torch.zeros(2, 6), value=torch.zeros(2)),
    ]
    buf = LabelledBuffer.for_teachers(10, obs_space, spaces.Discrete(6), outputs, meta={"env_id": "PongNoFrameskip-v4"})
    assert buf.observation_shape == (84, 84, 4) and buf.observation_dtype == np.uint8
    assert buf.action_shape == () and buf.n_teachers == 2
    assert buf.teacher_field_shapes == {"logits": (6,), "q_values": (6,), "quantiles": (25, 6), "value": ()}
    box = LabelledBuffer.for_teachers(
        10,
        spaces.Box(-1, 1, (3,)),
        spaces.Box(-1, 1, (2,)),
        [TeacherOutput("deterministic", action=torch.zeros(1, 2), value=torch.zeros(1))],
    )
    assert box.action_shape == (2,) and box.action_dtype == np.float32
    with pytest.raises(PolicyKDError, match="not supported"):
        LabelledBuffer.for_teachers(10, spaces.Dict({"a": spaces.Discrete(2)}), spaces.Discrete(6), outputs)


def test_save_load_round_trip(tmp_path: Path) -> None:
    buf = make_buffer(5, env_id="CartPole-v1", sources=["ppo.zip", "dqn.zip"])
    add_step(buf, 0, 3)
    add_step(buf, 1, 3, driver=DRIVER_STUDENT)
    path = tmp_path / "buf.npz"
    buf.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buf.npz"]  # no temp file left behind
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["__header__"][()]))
        assert data["observations"].dtype == np.uint8
    assert header["version"] == 1 and header["pos"] == 1 and header["full"] is True
    loaded = LabelledBuffer.load(path)
    assert (loaded.pos, loaded.full, len(loaded), loaded.capacity) == (1, True, 5, 5)
    assert loaded.meta == {"env_id": "CartPole-v1", "sources": ["ppo.zip", "dqn.zip"]}
    assert loaded.layout() == buf.layout()
    for name in (
        "observations",
        "actions",
        "rewards",
        "terminated",
        "episode_starts",
        "drivers",
        "teacher_logits",
        "teacher_q_values",
        "teacher_value",
    ):
        np.testing.assert_array_equal(loaded.column(name), buf.column(name))
        assert loaded.column(name).dtype == buf.column(name).dtype
    a, b = buf.sample(7, np.random.default_rng(3)), loaded.sample(7, np.random.default_rng(3))
    assert torch.equal(a.observations, b.observations)


def test_save_writes_only_the_filled_rows_and_keeps_growing_after_load(tmp_path: Path) -> None:
    buf = make_buffer(1000)
    add_step(buf, 1, 4)
    buf.save(tmp_path / "b.npz")
    with np.load(tmp_path / "b.npz", allow_pickle=False) as data:
        assert data["observations"].shape == (4, *OBS_SHAPE)
        assert data["teacher_logits"].shape == (4, 2, N_ACTIONS)
    loaded = LabelledBuffer.load(tmp_path / "b.npz")
    assert (loaded.capacity, loaded.pos, loaded.full) == (1000, 4, False)
    add_step(loaded, 2, 4)
    assert len(loaded) == 8 and loaded.column("rewards").tolist() == [1.0] * 4 + [2.0] * 4


def test_save_replaces_atomically(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "b.npz"
    for n in (2, 3):
        buf = make_buffer(10)
        add_step(buf, 0, n)
        buf.save(path)
    assert len(LabelledBuffer.load(path)) == 3
    saved = path.read_bytes()

    # a write that fails half-way (a full disk) leaves the previous file whole, and no temporary file
    def half_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", half_then_fail)
    bigger = make_buffer(10)
    add_step(bigger, 1, 7)
    with pytest.raises(OSError, match="No space left"):
        bigger.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == saved and len(LabelledBuffer.load(path)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz"]


def test_a_save_killed_mid_write_leaves_the_previous_file(tmp_path: Path) -> None:
    """A process killed (SIGKILL: no cleanup runs) while it writes the new buffer: the file at the
    path is still the previous buffer, byte for byte."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "b.npz"
    buf = make_buffer(10)
    add_step(buf, 0, 3)
    buf.save(path)
    saved = path.read_bytes()
    script = f"""
import sys, time
import numpy as np
sys.path[:0] = {sys.path!r}
from tests.test_buffers import add_step, make_buffer

def stall(file, **arrays):  # half the archive written, then the process stalls until killed
    file.write(b"PK\\x03\\x04 half an archive")
    file.flush()
    print("writing", flush=True)
    time.sleep(60)

np.savez = stall
buf = make_buffer(10)
add_step(buf, 1, 7)
buf.save({str(path)!r})
"""
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        assert path.read_bytes() == saved  # while the new buffer is half written
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert path.read_bytes() == saved and len(LabelledBuffer.load(path)) == 3
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "b.npz"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".b.npz.")  # the killed write, under another name


@pytest.mark.parametrize("spoil", ["missing", "truncated", "garbage", "foreign_npz", "npy", "no_header_format"])
def test_unreadable_files_raise_one_line_policykd_error(tmp_path: Path, spoil: str) -> None:
    path = tmp_path / "b.npz"
    buf = make_buffer(10)
    add_step(buf, 0, 3)
    buf.save(path)
    if spoil == "missing":
        path = tmp_path / "nope.npz"
    elif spoil == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif spoil == "garbage":
        path.write_bytes(b"not a zip at all")
    elif spoil == "foreign_npz":
        np.savez(path, x=np.zeros(3))
    elif spoil == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif spoil == "no_header_format":
        with open(path, "wb") as f:
            np.savez(f, __header__=np.array(json.dumps({"format": "something.else"})))
    with pytest.raises(PolicyKDError) as info:
        LabelledBuffer.load(path)
    message = str(info.value)
    assert "is not a policykd buffer" in message and "policykd collect" in message and "\n" not in message


def test_load_rejects_a_missing_array(tmp_path: Path) -> None:
    buf = make_buffer(10)
    add_step(buf, 0, 3)
    buf.save(tmp_path / "b.npz")
    with zipfile.ZipFile(tmp_path / "b.npz") as src, zipfile.ZipFile(tmp_path / "c.npz", "w") as dst:
        for item in src.infolist():
            if item.filename != "drivers.npy":
                dst.writestr(item, src.read(item))
    with pytest.raises(PolicyKDError, match="not a policykd buffer"):
        LabelledBuffer.load(tmp_path / "c.npz")


def test_driver_shares() -> None:
    buf = make_buffer(10)
    assert buf.driver_shares() == {"teacher": 0.0, "student": 0.0}
    add_step(buf, 0, 3, driver=DRIVER_TEACHER)
    add_step(buf, 1, 1, driver=DRIVER_STUDENT)
    assert buf.driver_shares() == {"teacher": 0.75, "student": 0.25}
    assert DRIVER_NAMES[DRIVER_TEACHER] == "teacher" and DRIVER_NAMES[DRIVER_STUDENT] == "student"
    with pytest.raises(PolicyKDError, match="driver"):
        add_step(buf, 2, 1, driver=7)


def test_extend_appends_in_chronological_order() -> None:
    base, chunk = make_buffer(6), make_buffer(3)
    add_step(base, 0, 2)
    for step in (1, 2):  # chunk wraps: holds step 1 env 1, step 2 env 0, step 2 env 1
        add_step(chunk, step, 2, driver=DRIVER_STUDENT)
    base.extend(chunk)
    assert len(base) == 5 and base.column("observations")[:, 0, 0].tolist() == [0, 1, 11, 20, 21]
    assert base.driver_shares()["student"] == pytest.approx(3 / 5)
    with pytest.raises(PolicyKDError, match="layout"):
        base.extend(make_buffer(6, kinds=("categorical",)))


def test_bad_teacher_outputs_are_refused() -> None:
    buf = make_buffer(10)
    obs = np.zeros((2, *OBS_SHAPE), np.uint8)
    args = (obs, np.zeros(2, np.int64), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), np.zeros(2, bool), 0)
    with pytest.raises(PolicyKDError, match="teacher output"):  # K = 1 for a K = 2 buffer
        buf.add(*args, [categorical(2, 0.0)])
    with pytest.raises(PolicyKDError, match="same order"):  # right K, kinds swapped
        buf.add(*args, [q_values(2, 0.0), categorical(2, 0.0)])
    with pytest.raises(PolicyKDError, match="expected"):  # wrong batch dimension
        buf.add(*args, [categorical(3, 0.0), q_values(2, 0.0)])
    with pytest.raises(PolicyKDError, match="observations"):
        buf.add(obs.astype(np.float32), *args[1:], [categorical(2, 0.0), q_values(2, 0.0)])
    with pytest.raises(PolicyKDError, match="teacher_field_shapes"):
        LabelledBuffer(
            4,
            observation_shape=(),
            observation_dtype=np.int64,
            action_shape=(),
            action_dtype=np.int64,
            teacher_kinds=["categorical"],
            teacher_field_shapes={"logits": (2,)},
        )
    assert len(buf) == 0


def test_user_mistakes_outside_add_are_policykd_errors(tmp_path: Path) -> None:
    buf = make_buffer(4)
    with pytest.raises(PolicyKDError, match="empty"):
        buf.sample(2, np.random.default_rng(0))
    with pytest.raises(PolicyKDError, match="JSON"):
        make_buffer(4, bad=object())
    buf.meta["bad"] = {1, 2}  # meta is mutable; save checks it again
    add_step(buf, 0, 2)
    with pytest.raises(PolicyKDError, match="JSON"):
        buf.save(tmp_path / "b.npz")
    with pytest.raises(PolicyKDError, match="indices"):
        buf.batch_at([0, 2])
    with pytest.raises(PolicyKDError, match="capacity"):
        make_buffer(0)


def test_discrete_actions_of_shape_n_by_1_are_accepted() -> None:
    buf = make_buffer(4, kinds=("categorical",))
    obs = np.zeros((2, *OBS_SHAPE), np.uint8)
    buf.add(
        obs,
        np.array([[1], [2]]),
        np.zeros(2),
        np.zeros(2, bool),
        np.zeros(2, bool),
        np.ones(2, bool),
        DRIVER_STUDENT,
        [categorical(2, 0.0)],
    )
    assert buf.column("actions").tolist() == [1, 2] and buf.driver_shares()["student"] == 1.0


# -- frame-deduplicated storage of stacked images (Atari) --------------------------------------------


@pytest.mark.expensive
def test_deduplicated_frames_rebuild_exactly_what_vecframestack_gave():
    """Collect Breakout (its life losses end AtariWrapper episodes often) with and without deduplication: every stored observation is identical, the
    deduplicated buffer holds a quarter of the bytes, and a save/load round trip keeps it so."""
    import tempfile

    from stable_baselines3 import PPO

    from policykd.data.collect import collect_rollouts
    from policykd.data.envs import EnvRecipe, make_vec_env
    from policykd.data.teachers import Teacher

    recipe = EnvRecipe(
        "BreakoutNoFrameskip-v4", env_wrapper=["stable_baselines3.common.atari_wrappers.AtariWrapper"], frame_stack=4
    )
    venv = make_vec_env(recipe, 3, seed=0)
    policy = PPO("CnnPolicy", venv, n_steps=8, batch_size=8, seed=0, device="cpu").policy
    teacher = Teacher(policy, algo="ppo", source="test", recipe=recipe)
    # a random-ish driver (epsilon) ends episodes at life losses, so stacks cross episode starts
    dedup, _ = collect_rollouts(venv, [teacher], 450, rng=np.random.default_rng(0), epsilon=0.5)
    assert dedup.frame_stack == 4 and dedup.column("observations").shape[1:] == (1, 84, 84)
    full = LabelledBuffer.for_teachers(
        len(dedup), venv.observation_space, venv.action_space, dedup.batch_at(np.arange(1)).teacher_outputs
    )
    venv2 = make_vec_env(recipe, 3, seed=0)
    full, _ = collect_rollouts(
        venv2, [_StackKeeping(teacher)], 450, rng=np.random.default_rng(0), epsilon=0.5, buffer=full
    )
    assert bool(dedup.column("episode_starts")[3:].any()), "the test needs an episode start inside the data"
    everything = np.arange(len(dedup))
    np.testing.assert_array_equal(
        dedup.batch_at(everything).observations.numpy(), full.batch_at(everything).observations.numpy()
    )
    assert dedup.column("observations").nbytes * 4 == full.column("observations").nbytes
    with tempfile.TemporaryDirectory() as tmp:
        dedup.save(f"{tmp}/b.npz")
        loaded = LabelledBuffer.load(f"{tmp}/b.npz")
    np.testing.assert_array_equal(
        loaded.batch_at(everything).observations.numpy(), full.batch_at(everything).observations.numpy()
    )


class _StackKeeping:
    """The same teacher, with a recipe that turns deduplication off (frame_stack unset)."""

    def __init__(self, teacher):
        import dataclasses

        self._teacher = teacher
        self.recipe = dataclasses.replace(teacher.recipe, frame_stack=None)
        self.mapper, self.kind = teacher.mapper, teacher.kind

    def __call__(self, obs):
        return self._teacher(obs)


def test_full_deduplicated_ring_never_samples_a_stack_it_cannot_rebuild():
    buffer = LabelledBuffer(
        10,
        observation_shape=(4, 2, 2),
        observation_dtype=np.uint8,
        action_shape=(),
        action_dtype=np.int64,
        teacher_kinds=["categorical"],
        teacher_field_shapes={"logits": (2,), "value": ()},
        frame_stack=4,
        n_envs=2,
    )
    out = TeacherOutput("categorical", logits=torch.zeros(2, 2), value=torch.zeros(2))
    for step in range(8):  # 16 rows into a ring of 10: the oldest rows' earlier frames are gone
        frame = np.full((2, 1, 2, 2), step, np.uint8)
        obs = np.concatenate([np.maximum(frame - k, 0) for k in (3, 2, 1, 0)], axis=1)
        buffer.add(
            obs,
            np.zeros(2, np.int64),
            np.zeros(2),
            np.zeros(2, bool),
            np.zeros(2, bool),
            np.full(2, step == 0),
            0,
            [out],
        )
    batch = buffer.sample(200, np.random.default_rng(0))
    newest = batch.observations[:, -1, 0, 0].numpy().astype(int)
    for back in range(4):  # every sampled stack is the true one: step, step-1, step-2, step-3
        np.testing.assert_array_equal(batch.observations[:, 3 - back, 0, 0].numpy(), np.maximum(newest - back, 0))
    assert newest.min() >= 5  # rows of steps 3 and 4 (ages 0..5) would need overwritten frames
