"""Frame stacks rebuilt on the device (issue 20): a frame-stacked buffer's copy of its frames on the
training device gives the very batches the host path gives (forced here on the CPU), synced with
only the rows written since; the Trainer turns it on for CUDA when it fits in half the free GPU
memory, and says where stacks were rebuilt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policykd.data import device_frames
from policykd.data.buffers import LabelledBuffer
from policykd.data.device_frames import MIRROR_SHARE_OF_FREE, mirror_nbytes, place_frame_stacks
from policykd.errors import PolicyKDError
from policykd.learn.losses import KLLoss
from policykd.learn.students import make_student
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.types import TeacherOutput
from tests.test_devices import needs_cuda

STACK, CHANNELS, N_ACTIONS = 4, 2, 3


def stacked_buffer(capacity: int, n_envs: int, side: int = 3) -> LabelledBuffer:
    return LabelledBuffer(
        capacity,
        observation_shape=(STACK * CHANNELS, side, side),
        observation_dtype=np.uint8,
        action_shape=(),
        action_dtype=np.int64,
        teacher_kinds=["categorical"],
        teacher_field_shapes={"logits": (N_ACTIONS,), "value": ()},
        frame_stack=STACK,
        n_envs=n_envs,
    )


class Filler:
    """Adds vector steps of random frames, an episode start about every fourth step per env, and
    keeps every row ever written (global row g), to rebuild stacks without the ring's arithmetic.
    Fillers of the same seed add the same rows."""

    def __init__(self, buffer: LabelledBuffer, seed: int = 0) -> None:
        self.buffer, self.rng = buffer, np.random.default_rng(seed)
        self.frames: list[np.ndarray] = []  # (C, H, W) per global row
        self.starts: list[bool] = []

    def add(self, n_steps: int) -> None:
        n, side = self.buffer.n_envs, self.buffer.observation_shape[-1]
        for _ in range(n_steps):
            frames = self.rng.integers(1, 256, (n, CHANNELS, side, side), dtype=np.uint8)  # 0 only where missing
            starts = self.rng.random(n) < 0.25 if self.starts else np.ones(n, bool)
            obs = np.concatenate([np.zeros((n, (STACK - 1) * CHANNELS, side, side), np.uint8), frames], axis=1)
            logits = torch.from_numpy(self.rng.standard_normal((n, N_ACTIONS))).float()
            out = TeacherOutput("categorical", logits=logits, value=logits.sum(1))
            zeros = np.zeros(n, bool)
            self.buffer.add(obs, np.zeros(n, np.int64), np.zeros(n), zeros, zeros, starts, 0, [out])
            self.frames += list(frames)
            self.starts += starts.tolist()

    def expected_stack(self, index: int) -> np.ndarray:
        """The stack at storage ``index``, walked back through the global rows still kept."""
        buffer, n = self.buffer, self.buffer.n_envs
        oldest = len(self.frames) - len(buffer)
        row = next(g for g in range(oldest, len(self.frames)) if g % buffer.capacity == index)
        stack = np.zeros((STACK, *self.frames[0].shape), np.uint8)
        for back in range(STACK):
            stack[STACK - 1 - back] = self.frames[row - back * n]
            if self.starts[row - back * n] or row - (back + 1) * n < oldest:
                break
        return stack.reshape(buffer.observation_shape)


class Twins:
    """Two buffers filled with the same rows: ``host`` rebuilds stacks on the host, ``mirrored``
    from its copy of the frames on the CPU (the device path, forced where there is no GPU)."""

    def __init__(self, capacity: int, n_envs: int) -> None:
        self.host, self.mirrored = stacked_buffer(capacity, n_envs), stacked_buffer(capacity, n_envs)
        self.mirrored.stack_frames_on("cpu")
        self.fillers = Filler(self.host), Filler(self.mirrored)

    def add(self, n_steps: int) -> None:
        for filler in self.fillers:
            filler.add(n_steps)

    def check_all_rows(self) -> np.ndarray:
        """Every stored stack, bit-identical both ways and equal to the walk back; returns them."""
        indices = np.arange(len(self.host))
        device = self.mirrored.batch_at(indices, device="cpu").observations
        host = self.host.batch_at(indices).observations
        assert device.dtype == host.dtype == torch.uint8 and device.shape == host.shape
        torch.testing.assert_close(device, host, rtol=0, atol=0)
        np.testing.assert_array_equal(host.numpy(), np.stack([self.fillers[0].expected_stack(i) for i in indices]))
        return host.numpy()


@pytest.mark.parametrize(
    "capacity, n_envs, n_steps",
    [(60, 1, 30), (60, 3, 12), (23, 3, 40), (16, 2, 8), (43, 8, 9)],
    ids=["one-env", "several-envs", "wrapped-odd-capacity", "just-full", "wrapped-mid-step"],
)
def test_device_stacks_equal_host_stacks_and_a_plain_walk_back(capacity, n_envs, n_steps):
    twins = Twins(capacity, n_envs)
    twins.add(n_steps)
    assert twins.mirrored.stacks_device == torch.device("cpu") and twins.host.stacks_device is None
    stacks = twins.check_all_rows()
    missing = (stacks == 0).reshape(len(stacks), STACK, -1).all(-1)  # (B, S): a zero frame
    assert missing[:, 0].any() and not missing[:, -1].any(), "stacks must cross episode starts or the oldest rows"


def test_sampled_batches_are_the_same_whole_batches_either_way():
    twins = Twins(40, 4)
    twins.add(25)
    host, device = (b.sample(64, np.random.default_rng(3), "cpu") for b in (twins.host, twins.mirrored))
    for got, want in zip([*device[:3], *device.teacher_outputs[0][1:]], [*host[:3], *host.teacher_outputs[0][1:]]):
        if want is not None:
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_the_mirror_copies_only_the_rows_written_since_its_last_sync(monkeypatch):
    copied: list[int] = []  # rows per copy of frames to the mirror
    real = device_frames._host_tensor
    # frames (k, C, H, W) copied to the mirror; not host stacks (B, S*C, H, W) nor row indices (B, S)
    spy = lambda a, d: (copied.append(len(a)) or real(a, d)) if a.shape[1:2] == (CHANNELS,) else real(a, d)  # noqa: E731
    monkeypatch.setattr(device_frames, "_host_tensor", spy)
    twins = Twins(20, 3)  # 20 rows: steps of 3 straddle the ring's end
    twins.add(4)
    twins.check_all_rows()
    # steps added -> rows copied, in runs: none; 6; 2 + 1 around the end; 9; 30 rows, so all 20 once
    for n_steps, runs in ((0, []), (2, [6]), (1, [2, 1]), (3, [9]), (10, [20])):
        twins.add(n_steps)
        copied.clear()
        twins.check_all_rows()
        assert copied == runs
    monkeypatch.setattr(device_frames, "_COPY_BYTES", 7 * CHANNELS * 3 * 3)  # 7 frames a copy
    twins.add(7)
    copied.clear()
    twins.check_all_rows()
    assert copied == [7, 7, 5, 1]  # 21 rows from row 0: all 20 once, rows 1..19 then row 0


def test_a_loaded_or_extended_buffer_mirrors_every_row(tmp_path):
    twins = Twins(30, 2)
    twins.add(20)
    twins.host.save(tmp_path / "b.npz")
    loaded, host = LabelledBuffer.load(tmp_path / "b.npz"), twins.host.batch_at(np.arange(30)).observations
    loaded.stack_frames_on("cpu")
    torch.testing.assert_close(loaded.batch_at(np.arange(30), device="cpu").observations, host, rtol=0, atol=0)
    grown = stacked_buffer(30, 2)
    grown.stack_frames_on("cpu")
    grown.extend(twins.host)  # oldest first, from row 0
    in_order = twins.host.batch_at(twins.host.chronological_indices()).observations
    torch.testing.assert_close(grown.batch_at(np.arange(30), device="cpu").observations, in_order, rtol=0, atol=0)


def test_stack_frames_on_none_goes_back_to_the_host_and_whole_observations_refuse_it():
    buffer = stacked_buffer(10, 1)
    buffer.stack_frames_on("cpu")
    buffer.stack_frames_on(None)
    assert buffer.stacks_device is None
    flat = LabelledBuffer(
        4, observation_shape=(3,), observation_dtype=np.float32, action_shape=(), action_dtype=np.int64,
        teacher_kinds=["categorical"], teacher_field_shapes={"logits": (N_ACTIONS,), "value": ()},
    )  # fmt: skip
    with pytest.raises(PolicyKDError, match="only a frame-stacked buffer"):
        flat.stack_frames_on("cpu")
    assert place_frame_stacks(flat, "cpu") is None


def image_student():
    from gymnasium import spaces

    space = spaces.Box(0, 255, (STACK * CHANNELS, 36, 36), np.uint8)  # NatureCNN's smallest input
    return make_student("categorical", space, spaces.Discrete(N_ACTIONS), hidden_sizes=(8,), cnn_width=0.125, seed=0)


def small_config(**overrides) -> TrainerConfig:
    return TrainerConfig(n_updates=3, batch_size=8, progress_bar=False, **overrides)


def test_on_the_cpu_the_trainer_keeps_host_stacks_and_says_so():
    buffer = stacked_buffer(40, 2, side=36)
    Filler(buffer).add(20)
    trainer = Trainer(image_student(), KLLoss(), buffer, config=small_config())
    assert trainer.frame_stacks == {None: "frame stacks rebuilt on the host (training on the CPU)"}
    assert buffer.stacks_device is None
    buffer.stack_frames_on("cpu")  # a mirror already on the training device is kept
    trainer = Trainer(image_student(), KLLoss(), buffer, config=small_config())
    assert trainer.frame_stacks[None].startswith("frame stacks rebuilt on cpu from its copy of the stored frames")
    trainer.train()
    assert trainer.n_updates_done == 3


@pytest.mark.parametrize("free_times_need, fits", [(1.0 / MIRROR_SHARE_OF_FREE, True), (1.9, False), (1.0, False)])
def test_on_cuda_the_mirror_is_made_only_when_it_fits_in_half_the_free_memory(monkeypatch, free_times_need, fits):
    buffer = stacked_buffer(1_000, 8)
    need = mirror_nbytes(buffer)
    assert need == 1_001 * CHANNELS * 3 * 3
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(need * free_times_need), 10**12))
    asked = []
    real = buffer.stack_frames_on
    monkeypatch.setattr(buffer, "stack_frames_on", lambda device: asked.append(device) or real("cpu"))  # no GPU here
    line = place_frame_stacks(buffer, torch.device("cuda"))
    if fits:
        assert asked == [torch.device("cuda")] and line.startswith("frame stacks rebuilt on cpu from a copy")
    else:
        assert asked == [] and buffer.stacks_device is None
        assert line.startswith("frame stacks rebuilt on the host, then copied to cuda: ")
        assert "more than 50% of the GPU's free memory" in line


def test_distill_reports_where_frame_stacks_were_rebuilt(cartpole_expert_dir, tmp_path, capsys, monkeypatch):
    """The job's wiring: the Trainer's line reaches summary.json and the printed summary (CartPole
    has no frame stacks, so the line is made up here)."""
    from policykd.learn import trainer as trainer_module
    from tests.test_cli import SMALL, run_cli

    monkeypatch.setattr(trainer_module, "_place_frame_stacks", lambda sampler, device: {None: "stacks: made up"})
    out = tmp_path / "run"
    code, stdout, err = run_cli(["distill", "--teacher", str(cartpole_expert_dir), "--out", str(out), *SMALL], capsys)
    assert code == 0, err
    assert "stacks: made up" in stdout.splitlines()
    assert json.loads((out / "summary.json").read_text())["frame_stacks"] == "stacks: made up"


@needs_cuda
def test_on_cuda_the_trainer_samples_stacks_gathered_on_the_gpu():
    buffer = stacked_buffer(500, 8)
    filler = Filler(buffer)
    filler.add(80)  # 640 rows into 500: wrapped
    config = TrainerConfig(n_updates=20, batch_size=32, progress_bar=False, device="cuda")
    trainer = Trainer(image_student(), KLLoss(), buffer, config=config)
    assert buffer.stacks_device is not None and buffer.stacks_device.type == "cuda"
    assert trainer.frame_stacks[None].startswith("frame stacks rebuilt on cuda")
    trainer.train()
    filler.add(7)  # synced at the next sample
    indices = np.arange(len(buffer))
    on_gpu = buffer.batch_at(indices, device="cuda").observations
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), buffer.batch_at(indices).observations, rtol=0, atol=0)
    np.testing.assert_array_equal(on_gpu.cpu().numpy()[:5], np.stack([filler.expected_stack(i) for i in range(5)]))
