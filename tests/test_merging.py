"""Merge strategies on hand-computed cases, for discrete, Gaussian and deterministic teachers; weight
validation; teacher disagreement and per-teacher KL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policykd.errors import PolicyKDError
from policykd.learn.merging import (
    MERGE_NAMES,
    as_student_output,
    check_weights,
    ensemble_teacher_kind,
    entropy_weighted,
    make_merge,
    mean_logits,
    mean_probs,
    most_confident,
    per_teacher_kl,
    single_teacher,
    teacher_disagreement,
    teacher_names,
)
from policykd.learn.targets import soften
from policykd.types import DistillTarget, StudentOutput, TeacherOutput

INF = math.inf


def discrete(probs: list[list[float]], q_values: list[list[float]] | None = None) -> DistillTarget:
    """A discrete target from probabilities (B, A); exact zeros become -inf log-probs."""
    log_probs = torch.log(torch.tensor(probs, dtype=torch.float64))
    q = None if q_values is None else torch.tensor(q_values, dtype=torch.float64)
    return DistillTarget("discrete", log_probs=log_probs, q_values=q)


def gaussian(mean: list[list[float]], std: list[list[float]]) -> DistillTarget:
    m = torch.tensor(mean, dtype=torch.float64)
    return DistillTarget("gaussian", mean=m, log_std=torch.log(torch.tensor(std, dtype=torch.float64)), action=m)


def deterministic(action: list[list[float]]) -> DistillTarget:
    return DistillTarget("deterministic", action=torch.tensor(action, dtype=torch.float64))


def assert_same_target(merged: DistillTarget, expected: DistillTarget) -> None:
    assert merged.kind == expected.kind
    for field in ("log_probs", "q_values", "mean", "log_std", "action"):
        got, want = getattr(merged, field), getattr(expected, field)
        assert (got is None) == (want is None), field
        if want is not None:
            torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


DISCRETE_A = discrete([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], q_values=[[1.0, 0.5, 0.0], [0.0, 0.2, 2.0]])
DISCRETE_B = discrete([[0.2, 0.5, 0.3], [0.3, 0.4, 0.3]], q_values=[[0.0, 1.0, 0.2], [0.5, 0.6, 0.1]])
GAUSS_A = gaussian([[0.0, 1.0], [2.0, -1.0]], [[1.0, 0.5], [0.2, 2.0]])
GAUSS_B = gaussian([[2.0, 0.0], [1.0, 1.0]], [[0.5, 1.0], [1.0, 1.0]])


@pytest.mark.parametrize("name", MERGE_NAMES)
@pytest.mark.parametrize("teacher", [DISCRETE_A, GAUSS_A], ids=["discrete", "gaussian"])
def test_identical_teachers_merge_to_that_teacher(name: str, teacher: DistillTarget):
    # includes the product of experts / product of Gaussians: weights sum to 1, so no sharpening
    assert_same_target(make_merge(name)([teacher, teacher, teacher]), teacher)


@pytest.mark.parametrize("name", MERGE_NAMES)
@pytest.mark.parametrize("pair", [(DISCRETE_A, DISCRETE_B), (GAUSS_A, GAUSS_B)], ids=["discrete", "gaussian"])
def test_weights_one_zero_reduce_to_the_first_teacher(name: str, pair: tuple[DistillTarget, DistillTarget]):
    assert_same_target(make_merge(name, [1.0, 0.0])(pair), pair[0])
    assert_same_target(make_merge(name, [0.0, 3.0])(pair), pair[1])


@pytest.mark.parametrize("name", ["mean-probs", "mean-logits"])
def test_deterministic_teachers_average_their_actions(name: str):
    a, b = deterministic([[0.0, 1.0]]), deterministic([[1.0, -1.0]])
    assert_same_target(make_merge(name, [3, 1])([a, b]), deterministic([[0.25, 0.5]]))
    assert_same_target(make_merge(name, [1, 0])([a, b]), a)


@pytest.mark.parametrize("name", ["entropy-weighted", "most-confident"])
def test_deterministic_teachers_have_no_entropy_to_weight(name: str):
    with pytest.raises(PolicyKDError, match="no entropy.*mean-probs"):
        make_merge(name)([deterministic([[0.0]]), deterministic([[1.0]])])


def test_mean_probs_is_the_mixture_and_carries_mean_q():
    merged = mean_probs([DISCRETE_A, DISCRETE_B], weights=[1, 3])
    expected = 0.25 * DISCRETE_A.log_probs.exp() + 0.75 * DISCRETE_B.log_probs.exp()
    torch.testing.assert_close(merged.log_probs.exp(), expected)
    torch.testing.assert_close(merged.q_values, 0.25 * DISCRETE_A.q_values + 0.75 * DISCRETE_B.q_values)


def test_mean_probs_of_two_one_hot_teachers_is_fifty_fifty():
    merged = mean_probs([discrete([[1.0, 0.0]]), discrete([[0.0, 1.0]])])
    torch.testing.assert_close(merged.log_probs.exp(), torch.tensor([[0.5, 0.5]], dtype=torch.float64))


def test_mean_logits_is_the_renormalised_geometric_mean():
    merged = mean_logits([DISCRETE_A, DISCRETE_B], weights=[1, 1])
    geometric = (DISCRETE_A.log_probs.exp() * DISCRETE_B.log_probs.exp()).sqrt()
    torch.testing.assert_close(merged.log_probs.exp(), geometric / geometric.sum(dim=-1, keepdim=True))
    torch.testing.assert_close(merged.q_values, (DISCRETE_A.q_values + DISCRETE_B.q_values) / 2)
    # disjoint one-hot teachers have no common support: uniform, not NaN
    disjoint = mean_logits([discrete([[1.0, 0.0]]), discrete([[0.0, 1.0]])])
    torch.testing.assert_close(disjoint.log_probs.exp(), torch.tensor([[0.5, 0.5]], dtype=torch.float64))


def test_entropy_weighted_gives_more_weight_to_the_sharper_teacher():
    sharp, flat = discrete([[0.9, 0.1]]), discrete([[0.5, 0.5]])
    merged = entropy_weighted([sharp, flat])
    h_sharp = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    a_sharp = math.exp(-h_sharp) / (math.exp(-h_sharp) + math.exp(-math.log(2)))
    assert a_sharp > 0.5
    expected = a_sharp * 0.9 + (1 - a_sharp) * 0.5
    assert merged.log_probs.exp()[0, 0].item() == pytest.approx(expected)
    assert expected > 0.7  # more than the plain mean gives the sharp teacher
    # user weights multiply: w = (1, 4) tips it back towards the flat teacher
    tipped = entropy_weighted([sharp, flat], weights=[1, 4]).log_probs.exp()[0, 0].item()
    a = math.exp(-h_sharp) / (math.exp(-h_sharp) + 4 * 0.5)
    assert tipped == pytest.approx(a * 0.9 + (1 - a) * 0.5) and tipped < 0.7


def test_most_confident_picks_the_lower_entropy_teacher_per_state():
    a = discrete([[0.98, 0.01, 0.01], [0.4, 0.3, 0.3]], q_values=[[1, 0, 0], [2, 2, 2]])
    b = discrete([[0.3, 0.3, 0.4], [0.01, 0.98, 0.01]], q_values=[[5, 5, 5], [0, 1, 0]])
    merged = most_confident([a, b])
    torch.testing.assert_close(merged.log_probs, torch.stack([a.log_probs[0], b.log_probs[1]]))
    torch.testing.assert_close(merged.q_values, torch.stack([a.q_values[0], b.q_values[1]]))
    # a teacher of weight 0 is never chosen, however sharp
    assert_same_target(most_confident([a, b], weights=[1, 0]), a)
    # Gaussians: the smaller standard deviation wins, per state
    g = most_confident([GAUSS_A, GAUSS_B])  # entropies: A = log(0.5), log(0.4); B = log(0.5), log(1)
    torch.testing.assert_close(g.mean, torch.stack([GAUSS_A.mean[0], GAUSS_A.mean[1]]))


def test_gaussian_mixture_matches_a_hand_computation():
    a, b = gaussian([[0.0]], [[1.0]]), gaussian([[2.0]], [[1.0]])
    merged = mean_probs([a, b])
    # mean = 1; var = 0.5 (1 + 0) + 0.5 (1 + 4) - 1 = 2
    torch.testing.assert_close(merged.mean, torch.tensor([[1.0]], dtype=torch.float64))
    torch.testing.assert_close(merged.log_std, torch.tensor([[0.5 * math.log(2.0)]], dtype=torch.float64))
    torch.testing.assert_close(merged.action, merged.mean)
    # weights (1, 3), two dimensions, second one with different stds
    a, b = gaussian([[0.0, 1.0]], [[1.0, 0.5]]), gaussian([[4.0, 1.0]], [[2.0, 2.0]])
    merged = mean_probs([a, b], weights=[1, 3])
    mean = np.array([0.25 * 0 + 0.75 * 4, 1.0])
    var = np.array([0.25 * (1 + 0) + 0.75 * (4 + 16), 0.25 * 0.25 + 0.75 * 4 + 1.0]) - mean**2
    np.testing.assert_allclose(merged.mean.numpy()[0], mean)
    np.testing.assert_allclose(np.exp(2 * merged.log_std.numpy()[0]), var)


def test_product_of_gaussians_equals_the_closed_form():
    a, b = gaussian([[0.0]], [[1.0]]), gaussian([[3.0]], [[2.0]])
    merged = mean_logits([a, b])
    # precision = 0.5 / 1 + 0.5 / 4 = 0.625 -> var = 1.6; mean = 1.6 (0.5 * 0 / 1 + 0.5 * 3 / 4) = 0.6
    torch.testing.assert_close(merged.mean, torch.tensor([[0.6]], dtype=torch.float64))
    torch.testing.assert_close(merged.log_std, torch.tensor([[0.5 * math.log(1.6)]], dtype=torch.float64))
    # it is the renormalised N_a^0.5 N_b^0.5, checked on a grid
    x = np.linspace(-10, 10, 20001)
    density = np.exp(-0.5 * 0.5 * x**2 - 0.5 * 0.5 * (x - 3) ** 2 / 4)
    density /= density.sum()
    assert (density * x).sum() == pytest.approx(0.6, abs=1e-6)
    assert (density * (x - 0.6) ** 2).sum() == pytest.approx(1.6, abs=1e-6)


def test_categorical_and_q_value_teachers_are_a_valid_ensemble():
    ppo = soften(TeacherOutput("categorical", logits=torch.tensor([[2.0, 0.0]])), 1.0)
    dqn = soften(TeacherOutput("q_values", q_values=torch.tensor([[10.0, 12.0]])), 1.0)
    for name in MERGE_NAMES:
        merged = make_merge(name)([ppo, dqn])
        assert merged.kind == "discrete" and merged.log_probs.shape == (1, 2) and merged.q_values is None
    torch.testing.assert_close(make_merge("mean-logits")([ppo, dqn]).log_probs, torch.log(torch.tensor([[0.5, 0.5]])))
    assert ensemble_teacher_kind(["categorical", "q_values"]) == "categorical"  # no Q-value MSE for this pair
    assert ensemble_teacher_kind(["q_values", "quantiles"]) == "q_values"
    assert ensemble_teacher_kind(["squashed_gaussian", "squashed_gaussian"]) == "squashed_gaussian"


@pytest.mark.parametrize(
    "kinds",
    [["gaussian", "squashed_gaussian"], ["categorical", "gaussian"], ["deterministic", "gaussian"], [], ["ppo"]],
)
def test_ensemble_teacher_kind_refuses_kinds_that_cannot_merge(kinds: list[str]):
    with pytest.raises(PolicyKDError):
        ensemble_teacher_kind(kinds)


@pytest.mark.parametrize("weights", [[1, -1], [0, 0], [1, math.nan], [1, INF], ["a", 1], [], [[1, 2], [3, 4]]])
def test_bad_weights_are_rejected(weights: list):
    with pytest.raises(PolicyKDError, match="weight"):
        make_merge("mean-probs", weights)


def test_weights_must_match_the_number_of_teachers():
    with pytest.raises(PolicyKDError, match="3 teacher weight.*2 teacher"):
        make_merge("mean-logits", [1, 1, 1])([DISCRETE_A, DISCRETE_B])
    with pytest.raises(PolicyKDError, match="1 teacher weight.*2 teacher"):
        check_weights([1.0], 2)
    assert check_weights(np.array([1, 2]), 2) == (1.0, 2.0)
    assert check_weights(None, 5) is None


def test_unmergeable_targets_are_refused():
    with pytest.raises(PolicyKDError, match="cannot merge a discrete target.*gaussian"):
        mean_probs([GAUSS_A, DISCRETE_A])
    with pytest.raises(PolicyKDError, match="shape of log_probs"):
        mean_probs([DISCRETE_A, discrete([[0.5, 0.5], [0.5, 0.5]])])
    with pytest.raises(PolicyKDError, match="no teacher targets"):
        mean_logits([])
    with pytest.raises(PolicyKDError, match="unknown merge strategy"):
        make_merge("median")
    with pytest.raises(PolicyKDError, match="no merge strategy"):
        single_teacher([DISCRETE_A, DISCRETE_B])


def test_teacher_disagreement():
    a, b = discrete([[0.9, 0.1], [0.5, 0.5]]), discrete([[0.1, 0.9], [0.5, 0.5]])
    metrics = teacher_disagreement([a, b])
    kl = 0.9 * math.log(9) + 0.1 * math.log(1 / 9)  # KL(a || b) in state 0 (symmetric here); state 1: 0
    assert metrics["teachers/disagreement_kl"] == pytest.approx(kl / 2)
    assert metrics["teachers/disagreement_top1"] == pytest.approx(0.5)
    assert teacher_disagreement([a]) == {"teachers/disagreement_kl": 0.0, "teachers/disagreement_top1": 0.0}
    assert teacher_disagreement([a, a, a])["teachers/disagreement_kl"] == pytest.approx(0.0)
    g = teacher_disagreement([gaussian([[0.0, 0.0]], [[1.0, 1.0]]), gaussian([[3.0, 4.0]], [[1.0, 1.0]])])
    assert g == pytest.approx({"teachers/disagreement_kl": 12.5, "teachers/disagreement_action": 5.0})
    d = teacher_disagreement([deterministic([[0.0, 0.0]]), deterministic([[0.6, 0.8]]), deterministic([[0.0, 0.0]])])
    assert d == pytest.approx({"teachers/disagreement_action": 4 * 1.0 / 6})


def test_per_teacher_kl_matches_torch_distributions():
    student = StudentOutput("discrete", logits=torch.tensor([[1.0, -0.2, 0.3], [0.0, 2.0, -1.0]], dtype=torch.float64))
    metrics = per_teacher_kl(student, [DISCRETE_A, DISCRETE_B], ["ppo-CartPole-v1_1", "dqn-CartPole-v1_1"])
    s = torch.distributions.Categorical(logits=student.logits)
    for name, target in zip(["ppo-CartPole-v1_1", "dqn-CartPole-v1_1"], [DISCRETE_A, DISCRETE_B]):
        expected = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=target.log_probs), s)
        assert metrics[f"teachers/{name}/kl"] == pytest.approx(expected.mean().item())
    assert metrics["teachers/ppo-CartPole-v1_1/agreement"] == metrics["teachers/dqn-CartPole-v1_1/agreement"] == 0.5
    same = per_teacher_kl(StudentOutput("gaussian", mean=GAUSS_A.mean, log_std=GAUSS_A.log_std), [GAUSS_A, GAUSS_B])
    assert same["teachers/0/kl"] == pytest.approx(0.0) and same["teachers/0/action_gap"] == 0.0  # unnamed: 0, 1
    assert same["teachers/1/kl"] > 0 and same["teachers/1/action_gap"] > 0
    with pytest.raises(PolicyKDError, match="cannot be compared"):
        per_teacher_kl(student, [GAUSS_A])
    with pytest.raises(PolicyKDError, match="one distinct name per teacher"):
        per_teacher_kl(student, [DISCRETE_A, DISCRETE_B], ["same", "same"])


def test_teacher_names_are_algo_and_run_and_distinct():
    records = [
        {"source": "agents/ppo/CartPole-v1_1", "algo": "ppo"},
        {"source": "/zoo/dqn/CartPole-v1_1/", "algo": "dqn"},
        {"source": "sb3/qrdqn-CartPole-v1", "algo": "qrdqn"},
        {"source": "experts/CartPole-v1.zip", "algo": "ppo"},
        {"source": "other/ppo/CartPole-v1_1", "algo": "ppo"},
        {"source": "my run/a2c model.zip", "algo": "a2c"},
    ]
    assert teacher_names(records, 6) == [
        "ppo-CartPole-v1_1",
        "dqn-CartPole-v1_1",
        "qrdqn-CartPole-v1",
        "ppo-CartPole-v1",
        "ppo-CartPole-v1_1-2",
        "a2c-a2c_model",
    ]
    assert teacher_names(None, 2) == teacher_names(records[:1], 2) == ["0", "1"]  # no (matching) records


def test_merged_target_acts_through_the_action_mapper():
    from gymnasium import spaces

    from policykd.data.actions import ActionMapper

    merged = mean_probs([DISCRETE_A, DISCRETE_B])
    np.testing.assert_array_equal(ActionMapper(spaces.Discrete(3)).from_student(as_student_output(merged)), [0, 2])
    box = ActionMapper(spaces.Box(-1.0, 1.0, (2,), np.float32))
    np.testing.assert_allclose(box.from_student(as_student_output(GAUSS_A)), [[0.0, 1.0], [1.0, -1.0]])


@pytest.mark.parametrize("merge_name", MERGE_NAMES)
def test_trainer_takes_a_merge(merge_name):
    """A PPO-like and a DQN-like teacher that disagree: a student trained through ``merge_name``
    ends closer to that merge's target than to any other merge's, so the trainer uses the merge
    it is given (another merge would fail this test)."""
    from gymnasium import spaces

    from policykd.data.buffers import LabelledBuffer
    from policykd.learn.losses import KLLoss, categorical_kl
    from policykd.learn.students import make_student
    from policykd.learn.trainer import Trainer, TrainerConfig

    rng = np.random.default_rng(0)
    obs = rng.standard_normal((64, 4)).astype(np.float32)
    value = torch.zeros(64)
    outputs = [
        TeacherOutput("categorical", logits=torch.as_tensor(obs[:, :2] * 3), value=value),
        TeacherOutput("q_values", q_values=torch.as_tensor(obs[:, 2:]), value=value),
    ]
    obs_space = spaces.Box(-np.inf, np.inf, (4,), np.float32)
    buffer = LabelledBuffer.for_teachers(64, obs_space, spaces.Discrete(2), outputs)
    zeros = np.zeros(64)
    buffer.add(obs, zeros.astype(np.int64), zeros, zeros > 0, zeros > 0, zeros > 0, 0, outputs)
    torch.manual_seed(0)
    student = make_student(ensemble_teacher_kind(buffer.teacher_kinds), obs_space, spaces.Discrete(2))
    config = TrainerConfig(n_updates=300, batch_size=32, learning_rate=3e-3, log_every=10, progress_bar=False)
    trainer = Trainer(student, KLLoss(), buffer, config=config, merge=make_merge(merge_name))
    metrics = trainer.train()
    assert math.isfinite(metrics["losses/distill"]) and "teacher/entropy" in metrics
    softened = [soften(out, 1.0) for out in buffer.batch_at(np.arange(64)).teacher_outputs]
    with torch.no_grad():
        log_q = torch.log_softmax(student(torch.as_tensor(obs)).logits, dim=-1)
    kl = {name: categorical_kl(make_merge(name)(softened).log_probs, log_q).mean().item() for name in MERGE_NAMES}
    assert min(kl, key=kl.get) == merge_name and kl[merge_name] < 0.01, kl
    _, steps = trainer.step()  # the step's target is the merge of the batch's softened outputs
    (step,) = steps.values()
    target, batch = step.target, step.batch
    expected = make_merge(merge_name)([soften(out, 1.0) for out in batch.teacher_outputs])
    torch.testing.assert_close(target.log_probs, expected.log_probs)
