"""Action masks (MaskablePPO): stored raw beside the raw logits, pickle-free; applied late, to both the
teachers' and the student's logits, and obeyed by every way of acting."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from policykd.data.actions import ActionMapper, masked_output
from policykd.data.buffers import LabelledBuffer
from policykd.errors import PolicyKDError
from policykd.learn.losses import KLLoss
from policykd.learn.targets import soften, with_masks_applied
from policykd.types import StudentOutput, TeacherOutput

N, A = 6, 4
MASKS = np.array([[True, False, True, False]] * 3 + [[False, False, False, True]] * 3)


def _outputs(seed: int = 0) -> list[TeacherOutput]:
    logits = torch.log_softmax(torch.randn(N, A, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return [TeacherOutput("categorical", logits=logits, value=torch.zeros(N))]


def _buffer(masks: bool) -> LabelledBuffer:
    space = gym.spaces.Box(-1, 1, (3,))
    return LabelledBuffer.for_teachers(
        16, space, gym.spaces.Discrete(A), _outputs(), action_mask_shape=(A,) if masks else None
    )


def _add(buffer: LabelledBuffer, masks: np.ndarray | None) -> None:
    obs, zeros = np.zeros((N, 3), np.float32), np.zeros(N)
    buffer.add(obs, np.zeros(N, np.int64), zeros, zeros > 0, zeros > 0, zeros > 0, 0, _outputs(), masks)


def test_masks_round_trip_through_the_npz_and_reach_the_batch(tmp_path) -> None:
    buffer = _buffer(masks=True)
    _add(buffer, MASKS)
    buffer.save(tmp_path / "buffer.npz")
    loaded = LabelledBuffer.load(tmp_path / "buffer.npz")
    assert loaded.layout()["action_mask_shape"] == [A]
    batch = loaded.batch_at(np.arange(N))
    assert batch.action_masks.dtype == torch.bool and np.array_equal(batch.action_masks.numpy(), MASKS)
    torch.testing.assert_close(batch.teacher_outputs[0].logits, _outputs()[0].logits)  # raw, not masked
    with np.load(tmp_path / "buffer.npz", allow_pickle=False) as data:
        assert data["action_masks"].dtype == bool
    unmasked = _buffer(masks=False)
    assert "action_mask_shape" not in unmasked.layout()
    _add(unmasked, None)
    assert unmasked.batch_at(np.arange(N)).action_masks is None


@pytest.mark.parametrize("masks", [True, False])
def test_masks_given_or_missing_against_the_layout_are_refused(masks: bool) -> None:
    with pytest.raises(PolicyKDError, match="action masks"):
        _add(_buffer(masks=masks), None if masks else MASKS)


def test_the_loss_sees_masked_logits_on_both_sides() -> None:
    buffer = _buffer(masks=True)
    _add(buffer, MASKS)
    batch = with_masks_applied(buffer.batch_at(np.arange(N)))
    target = soften(batch.teacher_outputs[0], 1.0)
    assert torch.all(target.log_probs.exp()[~torch.as_tensor(MASKS)] == 0)
    assert torch.allclose(target.log_probs.exp().sum(dim=-1), torch.ones(N))
    student_logits = torch.randn(N, A, requires_grad=True)
    student = masked_output(StudentOutput("discrete", logits=student_logits), batch.action_masks)
    for direction in ("forward", "reverse"):
        loss = KLLoss(direction=direction)(student, target).loss
        assert torch.isfinite(loss)
    loss.backward()
    assert torch.all(student_logits.grad[~torch.as_tensor(MASKS)] == 0)  # forbidden actions get no gradient
    # rows 3-5 allow one action only: both sides are certain of it, so their KL is 0
    per_sample = KLLoss(reduction="none")(student, target).loss
    assert torch.all(per_sample[3:] == 0)


def test_random_and_student_actions_obey_masks() -> None:
    from policykd.learn.students import make_student

    mapper = ActionMapper(gym.spaces.Discrete(A))
    masks = np.repeat(MASKS, 50, axis=0)
    actions = mapper.random(len(masks), np.random.default_rng(0), masks)
    assert masks[np.arange(len(masks)), actions].all() and set(actions[:150]) == {0, 2}
    student = make_student("categorical", gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(A), seed=0)
    obs = np.random.default_rng(1).uniform(-1, 1, (len(masks), 3)).astype(np.float32)
    for deterministic in (True, False):
        acted = student.act(obs, deterministic, np.random.default_rng(2), action_masks=masks)
        assert masks[np.arange(len(masks)), acted].all()
    assert not masks[np.arange(len(masks)), student.act(obs)].all()  # unmasked, it would break them


def test_a_task_of_a_multitask_student_obeys_masks() -> None:
    from policykd.learn.multitask import TaskSpace, make_multitask_student

    space = TaskSpace("categorical", gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(A))
    policy = make_multitask_student({"a": space, "b": space}, hidden_sizes=(8,), seed=0).task_policy("a")
    masks = np.repeat(MASKS, 50, axis=0)
    obs = np.random.default_rng(1).uniform(-1, 1, (len(masks), 3)).astype(np.float32)
    assert masks[np.arange(len(masks)), policy.act(obs, False, np.random.default_rng(2), action_masks=masks)].all()
    assert not masks[np.arange(len(masks)), policy.act(obs)].all()


def test_an_exported_student_refuses_masks_in_one_line(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from policykd.jobs.export import export_onnx
    from policykd.jobs.onnx_policy import OnnxPolicy
    from policykd.learn.students import make_student

    make_student("categorical", gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(A), seed=0).save(tmp_path)
    export_onnx(tmp_path, tmp_path / "student.onnx", n_check=16)
    obs = np.zeros((N, 3), np.float32)
    assert OnnxPolicy(tmp_path / "student.onnx").act(obs).shape == (N,)
    with pytest.raises(PolicyKDError, match="an exported student cannot obey yet") as err:
        OnnxPolicy(tmp_path / "student.onnx").act(obs, action_masks=MASKS)
    assert "\n" not in str(err.value)


def test_the_sb3_speaking_student_takes_masks_as_maskableppo_predict() -> None:
    from policykd.learn.sb3_policy import StudentPolicy
    from policykd.learn.students import make_student

    student = make_student("categorical", gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(A), seed=0)
    policy = StudentPolicy(student, student.config, seed=0)
    masks = np.repeat(MASKS, 50, axis=0)
    obs = np.random.default_rng(1).uniform(-1, 1, (len(masks), 3)).astype(np.float32)
    actions, _ = policy.predict(obs, deterministic=True, action_masks=masks)
    assert masks[np.arange(len(masks)), actions].all()
    one, _ = policy.predict(obs[3], deterministic=True, action_masks=MASKS[3])
    assert one == 3  # the only action row 3 allows
