"""``--device cpu|cuda|auto``: resolved once, refused in one line when no GPU is there, taken by
every command that labels or trains; the Trainer's NaN check reads the device only at log steps
on a GPU. Tests that need CUDA are skipped without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from policykd.cli import _parser
from policykd.devices import is_image_space, resolve_device
from policykd.errors import PolicyKDError
from policykd.learn.losses import KLLoss
from policykd.learn.trainer import Trainer
from tests import test_trainer
from tests.test_cli import SMALL, assert_one_line_error, run_cli
from tests.test_trainer import buffer_kl_and_agreement, config, fresh_student

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
needs_no_cuda = pytest.mark.skipif(CUDA, reason="checks the error shown without a GPU")

synthetic_buffer = test_trainer.synthetic_buffer  # the fixture, shared

IMAGES = spaces.Box(0, 255, (4, 84, 84), np.uint8)
VECTORS = spaces.Box(-np.inf, np.inf, (8,), np.float32)


def test_cpu_is_the_default_and_auto_picks_cuda_for_images_only():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert is_image_space(IMAGES) and not is_image_space(VECTORS)
    assert resolve_device("auto", image_observations=False) == torch.device("cpu")
    assert resolve_device("auto", image_observations=True) == torch.device("cuda" if CUDA else "cpu")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "gpu", ""])
def test_a_device_that_is_not_one_is_refused(name):
    with pytest.raises(PolicyKDError, match="is not a device; use cpu, cuda, cuda:N or auto"):
        resolve_device(name)


@needs_no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused_in_one_line(name):
    with pytest.raises(PolicyKDError, match=rf"--device {name}: .*; use --device cpu or auto") as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("command", ["collect", "distill", "evaluate", "sweep", "compare-drivers"])
def test_every_command_that_labels_or_trains_takes_device(command):
    parser = _parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    flags = {flag for action in sub.choices[command]._actions for flag in action.option_strings}
    assert "--device" in flags
    help_text = " ".join(sub.choices[command].format_help().split())
    assert "default cpu" in help_text and "auto" in help_text


@needs_no_cuda
def test_distill_with_cuda_and_no_gpu_fails_before_writing(cartpole_expert_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(cartpole_expert_dir), "--device", "cuda", "--out", str(out), *SMALL]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "distill", "--device cuda")
    assert not out.exists()


def test_a_bad_device_is_refused_by_evaluate(cartpole_expert_dir, capsys):
    code, _, err = run_cli(["evaluate", str(cartpole_expert_dir), "--device", "tpu", "--episodes", "1"], capsys)
    assert_one_line_error(code, err, "evaluate", "--device 'tpu' is not a device")


def test_distill_on_the_cpu_device_runs_and_records_it(cartpole_expert_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(cartpole_expert_dir), "--device", "auto", "--out", str(out), *SMALL]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "device: auto" in (out / "config.yml").read_text()


class NaNAfter:
    """KLLoss, whose loss turns NaN after ``n_good`` calls."""

    def __init__(self, n_good: int) -> None:
        self.inner, self.n_good, self.calls = KLLoss(), n_good, 0
        self.temperature = self.inner.temperature

    def __call__(self, student_out, target):
        self.calls += 1
        out = self.inner(student_out, target)
        return out._replace(loss=out.loss * float("nan")) if self.calls > self.n_good else out


def test_on_the_cpu_a_nan_stops_training_at_the_update_it_appears(synthetic_buffer):
    trainer = Trainer(fresh_student(), NaNAfter(5), synthetic_buffer, config=config())
    with pytest.raises(PolicyKDError, match="the loss is nan at update 6"):
        trainer.train()


def test_off_the_cpu_the_nan_check_waits_for_the_log_step(synthetic_buffer):
    """The deferred check a GPU uses (here forced on the CPU): no read per update; the error
    comes at the next log step and names the updates the divergence lies between."""
    trainer = Trainer(fresh_student(), NaNAfter(5), synthetic_buffer, config=config(log_every=50))
    trainer._finite.eager = False
    with pytest.raises(PolicyKDError, match="NaN or infinite between update 1 and 50;"):
        trainer.train()
    assert trainer.n_updates_done == 50


@needs_cuda
def test_training_on_cuda_samples_to_the_gpu_and_learns(synthetic_buffer):
    student = fresh_student()
    batch = synthetic_buffer.sample(8, np.random.default_rng(0), "cuda")
    assert batch.observations.device.type == "cuda"
    Trainer(student, KLLoss(), synthetic_buffer, config=config(device="cuda")).train()
    assert next(student.parameters()).device.type == "cuda"
    kl, agreement = buffer_kl_and_agreement(student.cpu(), synthetic_buffer)
    assert agreement > 0.95


@needs_cuda
def test_a_teacher_on_cuda_labels_as_on_the_cpu(cartpole_teacher):
    obs = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    on_cpu = cartpole_teacher(obs).logits
    try:
        on_gpu = cartpole_teacher.to("cuda")(obs).logits
    finally:
        cartpole_teacher.to("cpu")
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-5, rtol=1e-5)
