"""MultiDiscrete / MultiBinary actions as per-factor logits (B, F, C): the KL, NLL, entropy and merges
are those of the product distribution (each factor's value, summed), padded choices never count and
are never acted, and a factorised student exports to ONNX and to SB3's PPO."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Categorical, kl_divergence

from policykd.data.actions import INVALID_LOGIT, ActionMapper, factor_logits
from policykd.learn.losses import KLLoss, NLLLoss
from policykd.learn.merging import mean_logits, mean_probs
from policykd.learn.metrics import categorical_entropy, distill_metrics
from policykd.learn.targets import soften
from policykd.types import DistillTarget, StudentOutput, TeacherOutput

NVEC = (3, 2, 4)
B = 16


def _logits(seed: int, nvec: tuple[int, ...] = NVEC) -> torch.Tensor:
    flat = torch.randn(B, sum(nvec), generator=torch.Generator().manual_seed(seed))
    return factor_logits(flat, nvec, binary=False)


def _factors(logits: torch.Tensor, nvec: tuple[int, ...] = NVEC) -> list[Categorical]:
    return [Categorical(logits=logits[:, i, :n]) for i, n in enumerate(nvec)]


def test_factor_logits_pad_and_binary_pairs() -> None:
    flat = torch.arange(9.0).reshape(1, 9)
    logits = factor_logits(flat, NVEC, binary=False)
    assert logits.shape == (1, 3, 4)
    assert logits[0, 0, :3].tolist() == [0, 1, 2] and logits[0, 1, :2].tolist() == [3, 4]
    assert logits[0, 2].tolist() == [5, 6, 7, 8]
    assert torch.all(logits[0, 0, 3:] == INVALID_LOGIT) and torch.all(logits[0, 1, 2:] == INVALID_LOGIT)
    bernoulli_logits = torch.tensor([[-1.0, 0.5]])
    pairs = factor_logits(bernoulli_logits, (2, 2), binary=True)
    torch.testing.assert_close(torch.softmax(pairs, dim=-1)[..., 1], Bernoulli(logits=bernoulli_logits).probs)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kl_is_the_sum_of_the_factors_kls(direction: str, reduction: str) -> None:
    teacher, student = _logits(0), _logits(1).requires_grad_()
    target = soften(TeacherOutput("categorical", logits=torch.log_softmax(teacher, dim=-1)), 1.0)
    out = KLLoss(direction=direction, reduction=reduction)(StudentOutput("discrete", logits=student), target)
    p, q = _factors(teacher), _factors(student)
    pairs = zip(p, q) if direction == "forward" else zip(q, p)
    expected = sum(kl_divergence(a, b) for a, b in pairs)
    expected = {"mean": expected.mean(), "sum": expected.sum(), "none": expected}[reduction]
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    out.loss.sum().backward()
    assert torch.isfinite(student.grad).all() and torch.all(student.grad[:, 0, 3:] == 0)


def test_bernoulli_kl_as_pairs() -> None:
    flat_p, flat_q = torch.randn(B, 5), torch.randn(B, 5)
    target = DistillTarget("discrete", log_probs=torch.log_softmax(factor_logits(flat_p, (2,) * 5, True), dim=-1))
    student = StudentOutput("discrete", logits=factor_logits(flat_q, (2,) * 5, True))
    expected = kl_divergence(Bernoulli(logits=flat_p), Bernoulli(logits=flat_q)).sum(dim=1)
    torch.testing.assert_close(KLLoss(reduction="none")(student, target).loss, expected, rtol=1e-5, atol=1e-6)


def test_nll_and_entropy_sum_over_factors() -> None:
    teacher, student = _logits(2), _logits(3)
    target = soften(TeacherOutput("categorical", logits=torch.log_softmax(teacher, dim=-1)), 1.0)
    nll = NLLLoss(reduction="none")(StudentOutput("discrete", logits=student), target).loss
    labels = teacher.argmax(dim=-1)  # (B, F)
    expected = -sum(q.log_prob(labels[:, i]) for i, q in enumerate(_factors(student)))
    torch.testing.assert_close(nll, expected, rtol=1e-5, atol=1e-5)
    entropy = categorical_entropy(torch.log_softmax(teacher, dim=-1))
    torch.testing.assert_close(entropy, sum(p.entropy() for p in _factors(teacher)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("merge", [mean_probs, mean_logits], ids=["mean-probs", "mean-logits"])
def test_merges_act_factor_by_factor(merge) -> None:
    targets = [DistillTarget("discrete", log_probs=torch.log_softmax(_logits(s), dim=-1)) for s in (4, 5)]
    merged = merge(targets, torch.tensor([0.3, 0.7]))
    assert merged.log_probs.shape == (B, 3, 4)
    for i, n in enumerate(NVEC):  # each factor merged alone, as a plain (B, A) discrete target
        alone = [DistillTarget("discrete", log_probs=torch.log_softmax(t.log_probs[:, i, :n], dim=-1)) for t in targets]
        expected = merge(alone, torch.tensor([0.3, 0.7])).log_probs
        torch.testing.assert_close(merged.log_probs[:, i, :n], expected, rtol=1e-5, atol=1e-5)
        assert torch.all(merged.log_probs[:, i, n:].exp() == 0)


def test_agreement_needs_every_factor() -> None:
    teacher = _logits(6)
    student = teacher.clone()
    student[0, 1, :2] = teacher[0, 1, :2].flip(0)  # sample 0: the other choice in one factor of three
    target = DistillTarget("discrete", log_probs=torch.log_softmax(teacher, dim=-1))
    metrics = distill_metrics(StudentOutput("discrete", logits=student), target, target)
    assert metrics["distill/action_agreement"] == pytest.approx((B - 1) / B)


def test_the_mapper_acts_per_factor_and_never_picks_a_padded_choice() -> None:
    mapper = ActionMapper(gym.spaces.MultiDiscrete(list(NVEC)))
    logits = _logits(7)[:1].expand(20_000, -1, -1)
    greedy = mapper.from_student(StudentOutput("discrete", logits=logits))
    assert greedy.shape == (20_000, 3) and np.array_equal(greedy[0], logits[0].argmax(dim=-1).numpy())
    sampled = mapper.from_student(StudentOutput("discrete", logits=logits), False, np.random.default_rng(0))
    assert np.all(sampled < np.array(NVEC))
    for i, n in enumerate(NVEC):
        frequencies = np.bincount(sampled[:, i], minlength=n) / len(sampled)
        np.testing.assert_allclose(frequencies, torch.softmax(logits[0, i, :n], dim=-1).numpy(), atol=0.015)
    explored = mapper.epsilon_greedy(greedy[:1000], 0.5, np.random.default_rng(1))
    assert explored.shape == (1000, 3) and 0.3 < np.mean(np.any(explored != greedy[:1000], axis=1)) < 0.6
    binary = ActionMapper(gym.spaces.MultiBinary(4)).random(50, np.random.default_rng(2))
    assert binary.shape == (50, 4) and set(np.unique(binary)) == {0, 1}


def test_a_factorised_student_exports_to_onnx_and_sb3_ppo(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from stable_baselines3 import PPO

    from policykd.jobs.export import export_onnx, export_sb3
    from policykd.jobs.onnx_policy import OnnxPolicy
    from policykd.learn.students import make_student

    for space in (gym.spaces.MultiDiscrete(list(NVEC)), gym.spaces.MultiBinary(3)):
        folder = tmp_path / type(space).__name__
        student = make_student("categorical", gym.spaces.Box(-1, 1, (3,)), space, hidden_sizes=(8,), seed=0)
        student.save(folder)
        obs = np.random.default_rng(0).uniform(-1, 1, (64, 3)).astype(np.float32)
        report = export_sb3(folder, folder / "ppo.zip", n_check=64)
        assert report.algo == "ppo"
        np.testing.assert_array_equal(
            PPO.load(folder / "ppo.zip").predict(obs, deterministic=True)[0], student.act(obs)
        )
        export_onnx(folder, folder / "student.onnx", n_check=64)
        np.testing.assert_array_equal(OnnxPolicy(folder / "student.onnx").act(obs), student.act(obs))
