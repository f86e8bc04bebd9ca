"""Multi-task students: one trunk, per-task input layers and heads; save / load without pickle; the
task sampler's weights and seeds; a short synthetic run through the Trainer that lowers every task's
loss; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from policykd.data.buffers import LabelledBuffer
from policykd.errors import PolicyKDError
from policykd.learn.losses import KLLoss, MSELoss, NLLLoss, make_loss
from policykd.learn.merging import make_merge
from policykd.learn.multitask import (
    CONFIG_FILE,
    MultiTaskSampler,
    MultiTaskStudent,
    TaskSpace,
    make_multitask_student,
    named_items,
)
from policykd.learn.targets import soften
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.types import TeacherOutput

PENDULUM_ACTIONS = spaces.Box(-2.0, 2.0, (1,), np.float32)
TASKS = {
    "CartPole-v1": TaskSpace("categorical", spaces.Box(-np.inf, np.inf, (4,), np.float32), spaces.Discrete(2)),
    "Acrobot-v1": TaskSpace("q_values", spaces.Box(-np.inf, np.inf, (6,), np.float32), spaces.Discrete(3)),
    "Pendulum-v1": TaskSpace("gaussian", spaces.Box(-8.0, 8.0, (3,), np.float32), PENDULUM_ACTIONS),
}
OBS_DIMS = {"CartPole-v1": 4, "Acrobot-v1": 6, "Pendulum-v1": 3}
IMAGE = spaces.Box(0, 255, (1, 36, 36), np.uint8)


def student(seed: int = 0, **kwargs) -> MultiTaskStudent:
    return make_multitask_student(TASKS, hidden_sizes=(32, 32), input_width=16, seed=seed, **kwargs)


def observations(task: str, n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, OBS_DIMS[task])).astype(np.float32)


def teacher(task: str, obs: np.ndarray) -> TeacherOutput:
    """A fixed random linear teacher of the task's kind."""
    weights = torch.randn(OBS_DIMS[task], 3, generator=torch.Generator().manual_seed(OBS_DIMS[task]))
    out = 2.0 * torch.as_tensor(obs) @ weights
    value = out.max(dim=1).values
    if task == "CartPole-v1":
        return TeacherOutput("categorical", logits=out[:, :2], value=value)
    if task == "Acrobot-v1":
        return TeacherOutput("q_values", q_values=out, value=value)
    return TeacherOutput("gaussian", mean=torch.tanh(out[:, :1]), log_std=torch.full((len(obs), 1), -1.0), value=value)


def buffer(task: str, n: int = 512, seed: int = 0) -> LabelledBuffer:
    obs = observations(task, n, seed)
    labels = teacher(task, obs)
    _, obs_space, action_space = TASKS[task]
    buf = LabelledBuffer.for_teachers(n, obs_space, action_space, [labels], meta={"task": task})
    actions = np.zeros((n, 1), np.float32) if task == "Pendulum-v1" else np.zeros(n, np.int64)
    zeros = np.zeros(n, bool)
    buf.add(obs, actions, np.zeros(n, np.float32), zeros, zeros, zeros, 0, [labels])
    return buf


@pytest.fixture(scope="module")
def buffers() -> dict[str, LabelledBuffer]:
    return {task: buffer(task) for task in TASKS}


LOSSES = {"CartPole-v1": KLLoss(), "Acrobot-v1": MSELoss(), "Pendulum-v1": KLLoss()}


def test_three_tasks_shapes_and_parameter_count():
    model = student()
    assert model.tasks == tuple(TASKS) and not model.config.image
    cart, acro, pend = (model(torch.as_tensor(observations(t)), t) for t in TASKS)
    assert cart.kind == "discrete" and cart.logits.shape == (5, 2)
    assert acro.kind == "discrete" and acro.logits.shape == (5, 3)
    assert pend.kind == "gaussian" and pend.mean.shape == pend.log_std.shape == (5, 1)
    assert model.act(observations("CartPole-v1"), "CartPole-v1").shape == (5,)
    actions = model.act(observations("Pendulum-v1"), "Pendulum-v1", deterministic=False, rng=np.random.default_rng(0))
    assert actions.shape == (5, 1) and np.all(np.abs(actions) <= 2.0)
    trunk = (16 * 32 + 32) + (32 * 32 + 32)
    inputs = sum(d * 16 + 16 for d in (4, 6, 3))
    heads = (32 * 2 + 2) + (32 * 3 + 3) + (32 * 2 + 2)
    assert model.n_params == trunk + inputs + heads


def test_tasks_share_the_trunk_and_not_the_heads():
    model = student()
    loss = model(torch.as_tensor(observations("CartPole-v1")), "CartPole-v1").logits.sum()
    loss.backward()
    grads = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(name.startswith("trunk.") for name in grads)
    assert all(name.startswith(("trunk.", "task_modules.task0.")) for name in grads)


def test_task_policy_acts_like_a_student():
    model = student()
    obs = observations("Acrobot-v1")
    policy = model.task_policy("Acrobot-v1")
    np.testing.assert_array_equal(policy.act(obs), model.act(obs, "Acrobot-v1"))
    assert torch.equal(policy(torch.as_tensor(obs)).logits, model(torch.as_tensor(obs), "Acrobot-v1").logits)


def test_save_load_round_trip_gives_identical_actions(tmp_path):
    stats = {"CartPole-v1": (np.arange(4, dtype=np.float32), np.full(4, 2.0, np.float32))}
    model = student(seed=3, obs_stats=stats)
    model.save(tmp_path / "mt")
    config = json.loads((tmp_path / "mt" / CONFIG_FILE).read_text())  # plain JSON
    assert [task["name"] for task in config["tasks"]] == list(TASKS)
    loaded = MultiTaskStudent.load(tmp_path / "mt")
    assert loaded.config == model.config and not loaded.training
    for task in TASKS:
        obs = observations(task, 20, seed=1)
        np.testing.assert_array_equal(loaded.act(obs, task), model.act(obs, task))
    assert torch.equal(loaded.task_modules["task0"].obs_std, torch.full((4,), 2.0))


def test_a_task_sees_its_inputs_clipped_as_its_teacher_does(tmp_path):
    """VecNormalize clips normalised observations at clip_obs; a task's inputs are clipped the same
    way, and the clip survives save / load (issue 21)."""
    mean, std = np.zeros(4, np.float32), np.ones(4, np.float32)
    model = student(seed=3, obs_stats={"CartPole-v1": (mean, std, 2.0)})
    far = np.array([[50.0, -50.0, 0.5, 3.0]], np.float32)
    at_clip = np.array([[2.0, -2.0, 0.5, 2.0]], np.float32)
    with torch.no_grad():
        torch.testing.assert_close(
            model(torch.as_tensor(far), "CartPole-v1").logits, model(torch.as_tensor(at_clip), "CartPole-v1").logits
        )
        unclipped = student(seed=3, obs_stats={"CartPole-v1": (mean, std)})
        assert not torch.allclose(
            unclipped(torch.as_tensor(far), "CartPole-v1").logits, model(torch.as_tensor(far), "CartPole-v1").logits
        )
    model.save(tmp_path / "mt")
    assert MultiTaskStudent.load(tmp_path / "mt").spec("CartPole-v1").obs_clip == 2.0


def test_load_refuses_what_is_not_a_multitask_student(tmp_path):
    with pytest.raises(PolicyKDError, match="not a policykd multi-task student"):
        MultiTaskStudent.load(tmp_path)
    student().save(tmp_path / "mt")
    (tmp_path / "mt" / "multitask.safetensors").write_bytes(b"not a state dict")
    with pytest.raises(PolicyKDError, match="not a policykd multi-task student"):
        MultiTaskStudent.load(tmp_path / "mt")


def test_image_tasks_of_one_shape_share_a_cnn():
    tasks = {
        "Pong": TaskSpace("categorical", IMAGE, spaces.Discrete(6)),
        "Breakout": TaskSpace("q_values", IMAGE, spaces.Discrete(4)),
    }
    model = make_multitask_student(tasks, cnn_width=0.25, seed=0)
    assert model.config.image
    frames = np.random.default_rng(0).integers(0, 256, (2, 1, 36, 36), dtype=np.uint8)
    assert model(torch.as_tensor(frames), "Pong").logits.shape == (2, 6)
    assert model.act(frames, "Breakout").shape == (2,)


@pytest.mark.parametrize(
    ("tasks", "match"),
    [
        ({"Pong": TaskSpace("categorical", IMAGE, spaces.Discrete(6)), **TASKS}, "cannot mix image tasks"),
        (
            {
                "A": TaskSpace("categorical", IMAGE, spaces.Discrete(6)),
                "B": TaskSpace("categorical", spaces.Box(0, 255, (1, 40, 40), np.uint8), spaces.Discrete(6)),
            },
            "one observation shape",
        ),
        ({"A": TaskSpace("categorical", spaces.Discrete(3), spaces.Discrete(2))}, "Box only"),
        (
            {"A": TaskSpace("categorical", TASKS["CartPole-v1"].observation_space, spaces.MultiBinary(2))},
            "Discrete or Box",
        ),
        ({"A": TaskSpace("sarsa", TASKS["CartPole-v1"].observation_space, spaces.Discrete(2))}, "unknown teacher kind"),
        ({}, "no tasks given"),
        ([("A", TASKS["CartPole-v1"]), ("A", TASKS["Acrobot-v1"])], "'A' is listed twice"),
    ],
)
def test_make_multitask_student_refuses_what_it_cannot_handle(tasks, match: str):
    with pytest.raises(PolicyKDError, match=match):
        make_multitask_student(tasks)


def test_forward_refuses_unknown_tasks_and_wrong_shapes():
    model = student()
    with pytest.raises(PolicyKDError, match="unknown task 'Pong'"):
        model(torch.zeros(1, 4), "Pong")
    with pytest.raises(PolicyKDError, match=r"shape \(6,\)"):
        model(torch.zeros(1, 4), "Acrobot-v1")
    with pytest.raises(PolicyKDError, match="positive"):
        make_multitask_student(TASKS, input_width=0)
    with pytest.raises(PolicyKDError, match="normalisation statistics"):
        make_multitask_student(TASKS, obs_stats={"Acrobot-v1": (np.zeros(4), np.ones(4))})
    with pytest.raises(PolicyKDError, match="unknown task"):
        make_multitask_student(TASKS, obs_stats={"Pong": (np.zeros(4), np.ones(4))})


def test_sampler_splits_batches_by_weight(buffers):
    sampler = MultiTaskSampler(buffers, {"CartPole-v1": 5, "Acrobot-v1": 3, "Pendulum-v1": 2})
    rng = np.random.default_rng(0)
    assert sampler.counts(10, rng) == {"CartPole-v1": 5, "Acrobot-v1": 3, "Pendulum-v1": 2}  # exact multiples
    draws = np.array([list(sampler.counts(7, rng).values()) for _ in range(4000)])
    assert (draws.sum(axis=1) == 7).all()
    assert set(np.unique(draws[:, 0])) == {3, 4}  # floor(3.5) or one more, never further
    np.testing.assert_allclose(draws.mean(axis=0), [3.5, 2.1, 1.4], atol=0.05)
    batches = sampler.sample(10, rng)
    assert {task: len(b.observations) for task, b in batches.items()} == {
        "CartPole-v1": 5,
        "Acrobot-v1": 3,
        "Pendulum-v1": 2,
    }
    assert batches["Acrobot-v1"].observations.shape == (3, 6)
    # a task of weight 0 never appears; sequence weights follow task order
    only = MultiTaskSampler(buffers, [0, 1, 0])
    assert set(only.sample(8, rng)) == {"Acrobot-v1"}


def test_sampler_is_seeded(buffers):
    sampler = MultiTaskSampler(buffers)

    def draw(seed: int) -> list[torch.Tensor]:
        rng = np.random.default_rng(seed)
        return [b.observations for _ in range(3) for b in sampler.sample(16, rng).values()]

    first, again, other = draw(1), draw(1), draw(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1, 2], "2 task weight"),
        ([1, -1, 1], "non-negative"),
        ([0, 0, 0], "not all zero"),
        ([1, np.nan, 1], "finite"),
        ({"CartPole-v1": 1}, "one weight per task"),
        (["x", 1, 1], "numbers"),
    ],
)
def test_sampler_refuses_bad_weights(buffers, weights, match: str):
    with pytest.raises(PolicyKDError, match=match):
        MultiTaskSampler(buffers, weights)


def test_sampler_refuses_duplicates_and_empty_buffers(buffers):
    with pytest.raises(PolicyKDError, match="listed twice"):
        MultiTaskSampler([("CartPole-v1", buffers["CartPole-v1"]), ("CartPole-v1", buffers["Acrobot-v1"])])
    empty = LabelledBuffer.for_teachers(
        4,
        TASKS["CartPole-v1"].observation_space,
        spaces.Discrete(2),
        [teacher("CartPole-v1", observations("CartPole-v1"))],
    )
    with pytest.raises(PolicyKDError, match="empty"):
        MultiTaskSampler({"CartPole-v1": empty})
    with pytest.raises(PolicyKDError, match="batch_size"):
        MultiTaskSampler(buffers).counts(0, np.random.default_rng(0))
    assert named_items({"a": 1}, "task") == [("a", 1)]


@torch.no_grad()
def task_losses(model: MultiTaskStudent, buffers: dict[str, LabelledBuffer]) -> dict[str, float]:
    losses = {}
    for task, buf in buffers.items():
        batch = buf.batch_at(np.arange(len(buf)))
        losses[task] = LOSSES[task](model(batch.observations, task), soften(batch.teacher_outputs[0], 1.0)).loss.item()
    return losses


def train(
    model: MultiTaskStudent,
    buffers: dict[str, LabelledBuffer],
    loss_fns,
    *,
    task_weights=None,
    merges=None,
    logger=None,
    **config,
) -> dict[str, float]:
    """The Trainer on a MultiTaskSampler, as the distill job runs several tasks."""
    trainer_config = TrainerConfig(**{"progress_bar": False, **config})
    sampler = MultiTaskSampler(buffers, task_weights)
    return Trainer(model, loss_fns, sampler, config=trainer_config, merge=merges or {}, logger=logger).train()


class RecordingLogger:
    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.records.append((step, dict(metrics)))

    def log_hparams(self, hparams: dict) -> None:
        pass

    def close(self) -> None:
        pass


def test_short_training_lowers_every_tasks_loss(buffers):
    model = student()
    before = task_losses(model, buffers)
    logger = RecordingLogger()
    metrics = train(
        model,
        buffers,
        LOSSES,
        n_updates=200,
        batch_size=96,
        learning_rate=3e-3,
        task_weights=[1, 2, 1],
        seed=0,
        logger=logger,
        log_every=100,
    )
    after = task_losses(model, buffers)
    for task in TASKS:
        assert after[task] < 0.5 * before[task], task
    assert [step for step, _ in logger.records] == [100, 200]
    for task in TASKS:
        assert f"tasks/{task}/losses/distill" in metrics and f"tasks/{task}/distill/action_agreement" in metrics
    assert "tasks/Pendulum-v1/distill/kl_teacher_student" in metrics and "charts/SPS" in metrics
    assert not model.training and metrics["train/wall_time_s"] > 0


def test_training_is_seeded(buffers):
    def trained(seed: int) -> dict[str, torch.Tensor]:
        model = student()
        train(model, buffers, LOSSES, n_updates=5, batch_size=16, learning_rate=1e-3, seed=seed)
        return model.state_dict()

    first, again, other = trained(4), trained(4), trained(5)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_ensemble_tasks_log_teacher_disagreement():
    obs = observations("CartPole-v1", 64)
    labels = [
        teacher("CartPole-v1", obs),
        TeacherOutput("categorical", logits=-teacher("CartPole-v1", obs).logits, value=torch.zeros(64)),
    ]
    buf = LabelledBuffer.for_teachers(64, TASKS["CartPole-v1"].observation_space, spaces.Discrete(2), labels)
    zeros = np.zeros(64, bool)
    buf.add(obs, np.zeros(64, np.int64), np.zeros(64, np.float32), zeros, zeros, zeros, 0, labels)
    model = make_multitask_student({"CartPole-v1": TASKS["CartPole-v1"]}, hidden_sizes=(8,), input_width=8, seed=0)
    metrics = train(
        model,
        {"CartPole-v1": buf},
        {"CartPole-v1": NLLLoss()},
        n_updates=2,
        batch_size=8,
        learning_rate=1e-3,
        merges={"CartPole-v1": make_merge("mean-probs", [2, 1])},
    )
    assert metrics["tasks/CartPole-v1/teachers/disagreement_top1"] == 1.0
    # a buffer that records no teachers names them by index
    assert {"tasks/CartPole-v1/teachers/0/kl", "tasks/CartPole-v1/teachers/1/kl"} <= set(metrics)
    with pytest.raises(PolicyKDError, match="no merge strategy"):
        train(model, {"CartPole-v1": buf}, {"CartPole-v1": NLLLoss()}, n_updates=1, batch_size=8, learning_rate=1e-3)


def test_training_refuses_what_does_not_fit(buffers):
    def train_one(**overrides):
        kwargs = {"n_updates": 1, "batch_size": 8, "learning_rate": 1e-3, **overrides}
        return train(
            kwargs.pop("model", student()), kwargs.pop("buffers", buffers), kwargs.pop("loss_fns", LOSSES), **kwargs
        )

    with pytest.raises(PolicyKDError, match="losses cover"):
        train_one(loss_fns={"CartPole-v1": KLLoss()})
    with pytest.raises(PolicyKDError, match="student cover"):
        train_one(buffers={**buffers, "Other": buffers["CartPole-v1"]}, loss_fns={**LOSSES, "Other": KLLoss()})
    with pytest.raises(PolicyKDError, match="collect the buffer with that task"):
        train_one(buffers={**buffers, "CartPole-v1": buffers["Acrobot-v1"]})
    with pytest.raises(PolicyKDError, match="reduction='mean'"):
        train_one(loss_fns={**LOSSES, "Acrobot-v1": MSELoss(reduction="sum")})
    with pytest.raises(PolicyKDError, match="differs"):
        train_one(loss_fns={**LOSSES, "CartPole-v1": make_loss("kl", "categorical", temperature=2.0)}, temperature=1.0)
    with pytest.raises(PolicyKDError, match="n_updates"):
        train_one(n_updates=0)
    with pytest.raises(PolicyKDError, match="learning_rate"):
        train_one(learning_rate=float("nan"))
    with pytest.raises(PolicyKDError, match="unknown tasks"):
        train_one(merges={"Pong": make_merge("mean-probs")})


def test_a_seed_gives_the_weights_of_manual_seed_and_leaves_the_global_rng_alone():
    torch.manual_seed(7)
    expected = make_multitask_student(TASKS, hidden_sizes=(32, 32), input_width=16).state_dict()
    state = torch.get_rng_state()
    model = student(seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(model.state_dict()[name], value) for name, value in expected.items())


def test_the_step_minimises_the_row_weighted_mean_of_the_task_losses(buffers):
    losses = {**LOSSES, "CartPole-v1": KLLoss(temperature=2.0)}
    cfg = TrainerConfig(n_updates=1, batch_size=20, progress_bar=False)
    trainer = Trainer(student(), losses, MultiTaskSampler(buffers, [1, 2, 1]), config=cfg)
    assert trainer.multitask and trainer.temperatures == {"CartPole-v1": 2.0, "Acrobot-v1": 1.0, "Pendulum-v1": 1.0}
    with pytest.raises(PolicyKDError, match="different temperatures"):
        trainer.temperature
    loss, steps = trainer.step()
    assert {task: len(s.batch.observations) for task, s in steps.items()} == {
        "CartPole-v1": 5,
        "Acrobot-v1": 10,
        "Pendulum-v1": 5,
    }
    expected = sum(s.loss_out.loss.item() * len(s.batch.observations) / 20 for s in steps.values())
    assert loss.item() == pytest.approx(expected)
    assert trainer.step_metrics(loss, steps)["losses/distill"] == loss.item()
    assert steps["CartPole-v1"].target.log_probs.shape == (5, 2)  # tau 2 for that task only, one teacher


def test_one_loss_serves_every_task(buffers):
    cfg = TrainerConfig(n_updates=3, batch_size=12, progress_bar=False)
    trainer = Trainer(student(), KLLoss(), MultiTaskSampler(buffers), config=cfg)
    assert trainer.temperature == 1.0
    metrics = trainer.train()
    assert {f"tasks/{task}/losses/distill" for task in TASKS} <= set(metrics) and trainer.n_updates_done == 3
