"""Trainer on a synthetic buffer: random observations labelled by a fixed random categorical
teacher. The KL goes down, the logger gets the fixed tag vocabulary, a seed fixes the weights and
the global torch RNG is neither seeded nor used. Several tasks: tests/test_multitask.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from policykd.data.buffers import LabelledBuffer
from policykd.errors import PolicyKDError
from policykd.learn.losses import KLLoss, categorical_kl
from policykd.learn.students import Student, make_student
from policykd.learn.targets import soften
from policykd.learn.trainer import Trainer, TrainerConfig, read_checkpoint, resolve_temperature
from policykd.types import TeacherOutput

OBS_DIM, N_ACTIONS, N_TRANSITIONS = 6, 4, 2_048
OBSERVATION_SPACE = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
ACTION_SPACE = spaces.Discrete(N_ACTIONS)
TRAIN_TAGS = {
    "losses/distill",
    "teacher/entropy",
    "student/entropy",
    "distill/kl_teacher_student",
    "distill/action_agreement",
    "distill/entropy_gap",
    "buffer/share_teacher",
    "buffer/share_student",
    "charts/SPS",
    "charts/teacher_transitions",
}
EVAL_TAGS = {"eval/student_return", "eval/pct_of_teacher"}


class RecordingLogger:
    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []
        self.closed = False

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.records.append((step, dict(metrics)))

    def log_hparams(self, hparams: dict) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def steps_with(self, tag: str) -> list[int]:
        return [step for step, metrics in self.records if tag in metrics]


def random_teacher(observations: np.ndarray) -> TeacherOutput:
    """A fixed random linear categorical teacher: logits = 2 * obs @ W."""
    weights = torch.randn(OBS_DIM, N_ACTIONS, generator=torch.Generator().manual_seed(1234))
    logits = 2.0 * torch.as_tensor(observations) @ weights
    return TeacherOutput("categorical", logits=logits, value=logits.max(dim=1).values)


@pytest.fixture(scope="module")
def synthetic_buffer() -> LabelledBuffer:
    rng = np.random.default_rng(0)
    observations = rng.standard_normal((N_TRANSITIONS, OBS_DIM)).astype(np.float32)
    labels = random_teacher(observations)
    buffer = LabelledBuffer.for_teachers(N_TRANSITIONS, OBSERVATION_SPACE, ACTION_SPACE, [labels])
    n = N_TRANSITIONS
    buffer.add(
        observations,
        labels.logits.argmax(dim=1).numpy(),
        np.zeros(n, np.float32),
        np.zeros(n, bool),
        np.zeros(n, bool),
        np.zeros(n, bool),
        0,
        [labels],
    )
    return buffer


def fresh_student(seed: int = 0) -> Student:
    torch.manual_seed(seed)
    return make_student("categorical", OBSERVATION_SPACE, ACTION_SPACE, hidden_sizes=(32, 32))


def config(**overrides) -> TrainerConfig:
    return TrainerConfig(
        **{
            "n_updates": 300,
            "batch_size": 128,
            "learning_rate": 3e-3,
            "log_every": 100,
            "progress_bar": False,
            **overrides,
        }
    )


@torch.no_grad()
def buffer_kl_and_agreement(student: Student, buffer: LabelledBuffer) -> tuple[float, float]:
    """Mean KL(teacher || student) and argmax agreement over the whole buffer."""
    batch = buffer.batch_at(np.arange(len(buffer)))
    target = soften(batch.teacher_outputs[0], 1.0)
    logits = student(batch.observations).logits
    kl = categorical_kl(target.log_probs, torch.log_softmax(logits, dim=-1)).mean().item()
    agreement = (logits.argmax(dim=1) == target.log_probs.argmax(dim=1)).float().mean().item()
    return kl, agreement


def test_training_drives_the_kl_down(synthetic_buffer):
    student = fresh_student()
    kl_before, _ = buffer_kl_and_agreement(student, synthetic_buffer)
    logger = RecordingLogger()
    metrics = Trainer(student, KLLoss(), synthetic_buffer, config=config(), logger=logger).train()
    kl_after, agreement = buffer_kl_and_agreement(student, synthetic_buffer)
    assert kl_after < 0.05 * kl_before
    assert agreement > 0.95
    logged_kl = [metrics["distill/kl_teacher_student"] for _, metrics in logger.records]
    assert len(logged_kl) == 3 and logged_kl[-1] < logged_kl[0]
    assert metrics["losses/distill"] == pytest.approx(metrics["distill/kl_teacher_student"])  # tau = 1, forward
    assert not student.training, "the student is left in eval mode"


def test_logger_gets_the_tag_vocabulary_on_schedule(synthetic_buffer, tmp_path):
    logger = RecordingLogger()
    calls: list[int] = []

    def evaluate(student: Student) -> dict[str, float]:
        assert not student.training, "evaluation runs in eval mode"
        calls.append(1)
        return {"eval/student_return": float(len(calls)), "eval/pct_of_teacher": 50.0}

    trainer = Trainer(
        fresh_student(),
        KLLoss(),
        synthetic_buffer,
        config=config(n_updates=250, eval_every=120),
        logger=logger,
        evaluate=evaluate,
        checkpoint_dir=tmp_path / "student",
    )
    metrics = trainer.train()
    assert {tag for _, m in logger.records for tag in m} == TRAIN_TAGS | EVAL_TAGS
    assert logger.steps_with("losses/distill") == [100, 200, 250]
    assert logger.steps_with("eval/student_return") == [120, 240, 250]
    for _, logged in logger.records:
        assert set(logged) in (TRAIN_TAGS, EVAL_TAGS)
        assert all(isinstance(value, float) for value in logged.values())
    assert trainer.n_updates_done == 250
    assert metrics["eval/student_return"] == 3.0 and "train/wall_time_s" in metrics
    saved = Student.load(tmp_path / "student")
    assert all(torch.equal(saved.state_dict()[k], v) for k, v in trainer.student.state_dict().items())


def test_same_seed_same_weights(synthetic_buffer):
    def trained(seed: int) -> dict[str, torch.Tensor]:
        student = fresh_student(0)
        Trainer(student, KLLoss(), synthetic_buffer, config=config(n_updates=50, seed=seed)).train()
        return student.state_dict()

    first, again, other = trained(7), trained(7), trained(8)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)


def test_temperature_softens_the_logged_teacher_entropy(synthetic_buffer):
    entropies = {}
    for tau in (1.0, 3.0):
        logger = RecordingLogger()
        cfg = config(n_updates=1, temperature=tau)
        Trainer(fresh_student(), KLLoss(temperature=tau), synthetic_buffer, config=cfg, logger=logger).train()
        entropies[tau] = logger.records[0][1]["teacher/entropy"]
    assert entropies[3.0] > entropies[1.0]
    assert entropies[3.0] <= np.log(N_ACTIONS)


@pytest.mark.parametrize(
    "bad",
    [
        {"n_updates": 0},
        {"batch_size": 0},
        {"log_every": 0},
        {"eval_every": -1},
        {"learning_rate": 0.0},
        {"learning_rate": float("nan")},
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"max_grad_norm": 0.0},
        {"checkpoint_every_s": -1.0},
        {"checkpoint_every_s": float("nan")},
    ],
)
def test_bad_trainer_config_is_a_user_error(bad):
    with pytest.raises(PolicyKDError):
        config(**bad)


def test_temperature_comes_from_the_loss_and_must_agree(synthetic_buffer):
    assert Trainer(fresh_student(), KLLoss(temperature=3.0), synthetic_buffer, config=config()).temperature == 3.0
    assert Trainer(fresh_student(), KLLoss(), synthetic_buffer, config=config(temperature=1.0)).temperature == 1.0
    with pytest.raises(PolicyKDError, match="set it in one place"):
        Trainer(fresh_student(), KLLoss(temperature=3.0), synthetic_buffer, config=config(temperature=2.0))


def test_training_neither_seeds_nor_draws_from_the_global_torch_rng(synthetic_buffer):
    def trained(global_seed: int) -> tuple[dict[str, torch.Tensor], bool]:
        student = make_student("categorical", OBSERVATION_SPACE, ACTION_SPACE, hidden_sizes=(32, 32), seed=0)
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        Trainer(student, KLLoss(), synthetic_buffer, config=config(n_updates=20, seed=3)).train()
        return student.state_dict(), torch.equal(torch.get_rng_state(), state)

    (first, untouched), (second, _) = trained(1), trained(2)
    assert untouched, "Trainer.train must leave the caller's global RNG as it was"
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_one_task_step_minimises_the_loss_itself(synthetic_buffer):
    trainer = Trainer(fresh_student(), KLLoss(reduction="sum"), synthetic_buffer, config=config())
    loss, steps = trainer.step()
    assert list(steps) == [None] and not trainer.multitask and trainer.n_updates_done == 1
    assert loss.item() == steps[None].loss_out.loss.item()  # "sum" works for one task: the weight n / B is 1
    assert steps[None].batch.observations.shape == (128, OBS_DIM)
    assert steps[None].student_out.logits.shape == steps[None].target.log_probs.shape == (128, N_ACTIONS)


def test_every_loss_declares_its_temperature_and_reduction():
    from policykd.learn.losses import MSELoss, NLLLoss

    assert KLLoss(temperature=2.0).temperature == 2.0 and NLLLoss().temperature is None
    assert MSELoss().temperature is None and MSELoss(reduction="sum").reduction == "sum"
    assert resolve_temperature(None, NLLLoss()) == 1.0
    assert resolve_temperature(2.0, NLLLoss()) == 2.0
    assert resolve_temperature(None, KLLoss(temperature=3.0)) == 3.0
    with pytest.raises(PolicyKDError, match=r"differs from the loss's 3.0 \(task 'Pong'\); set it in one place"):
        resolve_temperature(2.0, KLLoss(temperature=3.0), "Pong")


def test_losses_per_task_need_a_multitask_sampler(synthetic_buffer):
    with pytest.raises(PolicyKDError, match="MultiTaskSampler"):
        Trainer(fresh_student(), {"CartPole-v1": KLLoss()}, synthetic_buffer, config=config())


# -- checkpoints and resume (issue 16) -------------------------------------------------------------


class Crash(Exception):
    """A crash that leaves no chance to write anything (as SIGKILL)."""


def checkpointed_trainer(buffer, tmp_path, every_s: float, fault=None) -> tuple[Trainer, RecordingLogger, list]:
    """250 updates, evaluations after 120, 240 and 250, checkpoints in ``tmp_path/ckpt``. The
    evaluation keeps its results in the trainer's ``progress``; ``fault(trainer, where)`` is called
    before each update ("update") and inside each evaluation ("evaluate")."""
    logger, progress, calls = RecordingLogger(), {"returns": []}, []
    trainer: Trainer

    def evaluate(student: Student) -> dict[str, float]:
        calls.append(trainer.n_updates_done)
        if fault is not None:
            fault(trainer, "evaluate")
        kl, agreement = buffer_kl_and_agreement(student, buffer)
        progress["returns"].append(kl)
        return {"eval/student_return": agreement, "eval/pct_of_teacher": kl}

    trainer = Trainer(
        fresh_student(),
        KLLoss(),
        buffer,
        config=config(n_updates=250, eval_every=120, log_every=50, checkpoint_every_s=every_s),
        logger=logger,
        evaluate=evaluate,
        checkpoint_path=tmp_path / "ckpt",
        progress=progress,
    )
    sample = trainer._sample

    def faulty_sample():
        if fault is not None:
            fault(trainer, "update")
        return sample()

    trainer._sample = faulty_sample  # type: ignore[method-assign]
    return trainer, logger, calls


def crash_at_update(k: int):
    def fault(trainer: Trainer, where: str) -> None:
        if where == "update" and trainer.n_updates_done == k - 1:
            raise Crash

    return fault


def interrupt_inside_update(k: int):
    def fault(trainer: Trainer, where: str) -> None:  # a signal arriving mid-update: it is finished first
        if where == "update" and trainer.n_updates_done == k - 1:
            trainer.interrupt()

    return fault


def interrupt_evaluation(n: int):
    def fault(trainer: Trainer, where: str) -> None:  # a signal during an evaluation stops it at once
        if where == "evaluate" and trainer.n_updates_done == n:
            trainer.interrupt()

    return fault


def without_timing(records: list[tuple[int, dict[str, float]]]) -> list[tuple[int, dict[str, float]]]:
    return [(step, {k: v for k, v in m.items() if k != "charts/SPS"}) for step, m in records]


@pytest.mark.parametrize(
    ("fault", "every_s", "resumed_at", "n_calls"),
    [
        (crash_at_update(131), 0.0, 130, 3),  # the checkpoint after update 130 survives the crash
        (crash_at_update(131), 1e9, 120, 3),  # only evaluation checkpoints: 120's evaluation is kept
        (interrupt_inside_update(131), 1e9, 131, 3),  # the update in progress is finished and kept
        (interrupt_evaluation(240), 1e9, 240, 4),  # the cut evaluation is redone, not the updates
    ],
    ids=["crash", "crash-sparse-checkpoints", "interrupt-in-update", "interrupt-in-evaluation"],
)
def test_a_restored_trainer_ends_bitwise_where_an_uninterrupted_one_does(
    synthetic_buffer, tmp_path, fault, every_s, resumed_at, n_calls
):
    reference, reference_log, reference_calls = checkpointed_trainer(synthetic_buffer, tmp_path / "ref", 1e9)
    reference_metrics = reference.train()

    stopped, stopped_log, stopped_calls = checkpointed_trainer(synthetic_buffer, tmp_path / "run", every_s, fault)
    with pytest.raises((Crash, KeyboardInterrupt)):
        stopped.train()
    checkpoint = read_checkpoint(tmp_path / "run" / "ckpt")
    assert checkpoint.n_updates_done == resumed_at
    resumed, resumed_log, resumed_calls = checkpointed_trainer(synthetic_buffer, tmp_path / "run", every_s)
    resumed.restore(checkpoint)
    metrics = resumed.train()

    for name, value in reference.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[name], value), name
    optimizer = resumed.optimizer.state_dict()["state"]
    for index, state in reference.optimizer.state_dict()["state"].items():
        assert all(torch.equal(optimizer[index][key], value) for key, value in state.items())
    assert resumed.n_updates_done == 250 and resumed.progress == reference.progress
    assert metrics["eval/student_return"] == reference_metrics["eval/student_return"]
    assert len(stopped_calls) + len(resumed_calls) == n_calls and reference_calls == [120, 240, 250]
    # TensorBoard purges the steps from the checkpoint's on (purge_step); the resumed run logs them again
    kept = [(step, m) for step, m in stopped_log.records if step < resumed_at]
    assert without_timing(kept + resumed_log.records) == without_timing(reference_log.records)


def test_a_finished_checkpoint_resumes_to_nothing_left_to_do(synthetic_buffer, tmp_path):
    trainer, _, calls = checkpointed_trainer(synthetic_buffer, tmp_path, 1e9)
    metrics = trainer.train()
    again, log, again_calls = checkpointed_trainer(synthetic_buffer, tmp_path, 1e9)
    again.restore(read_checkpoint(tmp_path / "ckpt"))
    assert again.train()["eval/student_return"] == metrics["eval/student_return"]
    assert again.n_updates_done == 250 and again_calls == [] and len(calls) == 3
    (step, logged), *more = log.records  # what had been logged at 250 (metrics and evaluation), logged again
    assert step == 250 and set(logged) == TRAIN_TAGS | EVAL_TAGS and not more


def test_a_checkpoint_that_does_not_fit_is_a_user_error(synthetic_buffer, tmp_path):
    trainer, _, _ = checkpointed_trainer(synthetic_buffer, tmp_path, 1e9)
    trainer.save_checkpoint()
    other = Trainer(
        make_student("categorical", OBSERVATION_SPACE, ACTION_SPACE, hidden_sizes=(8,), seed=0),
        KLLoss(),
        synthetic_buffer,
        config=config(),
    )
    with pytest.raises(PolicyKDError, match="does not fit this training run"):
        other.restore(read_checkpoint(tmp_path / "ckpt"))
    (tmp_path / "junk").write_bytes(b"\x10" + bytes(20))
    with pytest.raises(PolicyKDError, match="is not a policykd training checkpoint"):
        read_checkpoint(tmp_path / "junk")
