"""Every loss and collection flag of `policykd distill` / `collect` reaches the code it names.

Black-box: each case runs ``policykd.cli.main`` with tiny budgets and reads what the run wrote
(``summary.json``'s metrics of the one update, or the buffer file). With one update, the
recorded ``losses/distill`` is the loss of the first batch, which the same seed makes identical
between two runs, so a flag shows as an exact ratio or a difference between runs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from policykd.cli import main
from policykd.fileio import read_json

TINY = [
    *("--n-transitions", "64", "--n-updates", "1", "--batch-size", "64", "--eval-episodes", "1"),
    *("--no-progress", "--no-teacher-check", "--n-envs", "8"),  # 8 envs: states of 8 episodes' starts, as before
]


@pytest.fixture(scope="module")
def first_loss(tmp_path_factory, cartpole_expert_dir) -> Callable[..., float]:
    """``first_loss(*flags, teacher="ppo")``: the first update's loss of a tiny distil of the
    shipped CartPole expert (``ppo`` or ``dqn``) with these extra flags (runs are cached; each run's
    summary.json is kept in ``first_loss.summaries``)."""
    root, runs, summaries = cartpole_expert_dir.parents[2], {}, {}

    def run(*flags: str, teacher: str = "ppo") -> float:
        key = (teacher, *flags)
        if key not in runs:
            out = tmp_path_factory.mktemp("wiring") / "run"
            main(
                [
                    "distill",
                    "--teacher",
                    str(root / f"agents/{teacher}/CartPole-v1_1"),
                    *TINY,
                    *flags,
                    "--out",
                    str(out),
                ]
            )
            summaries[key] = read_json(out / "summary.json")
            runs[key] = summaries[key]["final_train_metrics"]["losses/distill"]
        return runs[key]

    run.summaries = summaries
    return run


def test_tau2_scaling_multiplies_the_kl_by_tau_squared(first_loss):
    plain = first_loss("--temperature", "2")
    assert plain > 0
    assert first_loss("--temperature", "2", "--tau2-scaling") == pytest.approx(4.0 * plain, rel=1e-6)
    assert first_loss("--temperature", "1", "--tau2-scaling") == pytest.approx(first_loss("--temperature", "1"))


def test_kl_direction_reverse_is_another_loss(first_loss):
    forward, reverse = first_loss("--temperature", "2"), first_loss("--temperature", "2", "--kl-direction", "reverse")
    assert forward > 0 and reverse > 0
    assert abs(reverse - forward) > 1e-3 * forward


def test_temperature_on_both_softens_the_student_too(first_loss):
    teacher_only = first_loss("--temperature", "2")
    both = first_loss("--temperature", "2", "--temperature-on", "both")
    assert both > 0 and abs(both - teacher_only) > 1e-3 * teacher_only
    # at tau 1 softening the student changes nothing
    assert first_loss("--temperature-on", "both") == pytest.approx(first_loss(), rel=1e-6)


def test_hard_label_weight_adds_lambda_times_the_nll_term(first_loss):
    """kl + 0.5 x cross-entropy to the teacher's argmax: exactly kl's first loss plus half nll's (same
    seed, same student, same batch), logged as ``losses/hard_label`` and recorded in summary.json."""
    plain, hard = first_loss(), first_loss("--loss", "nll")
    assert first_loss("--hard-label-weight", "0.5") == pytest.approx(plain + 0.5 * hard, rel=1e-5)
    summary = first_loss.summaries[("ppo", "--hard-label-weight", "0.5")]
    assert summary["hard_label_weight"] == 0.5 and summary["label_smoothing"] == 0.0
    assert summary["final_train_metrics"]["losses/hard_label"] == pytest.approx(hard, rel=1e-5)
    assert "losses/hard_label" not in first_loss.summaries[("ppo",)]["final_train_metrics"]


def test_label_smoothing_reaches_the_q_teacher_target(first_loss):
    """The DQN expert's softmax(Q / tau) mixed with uniform: another loss, recorded in summary.json;
    nll's argmax labels ignore it (refused there: tests/test_bad_inputs.py)."""
    plain, smoothed = first_loss(teacher="dqn"), first_loss("--label-smoothing", "0.3", teacher="dqn")
    assert plain > 0 and smoothed > 0 and abs(smoothed - plain) > 1e-3 * plain
    assert first_loss.summaries[("dqn", "--label-smoothing", "0.3")]["label_smoothing"] == 0.3


def test_no_q_center_fits_raw_q_values(first_loss):
    """The DQN expert's Q-values sit near 99 with gaps of a few hundredths: raw MSE is dominated by
    the per-state constant, centred MSE is not."""
    centred = first_loss("--loss", "mse", "--hidden", "64", "64", teacher="dqn")
    raw = first_loss("--loss", "mse", "--hidden", "64", "64", "--no-q-center", teacher="dqn")
    assert raw > 100 * centred > 0


def test_action_noise_reaches_the_collected_actions(tmp_path, cartpole_expert_dir):
    """`policykd collect --action-noise` on the Pendulum SAC expert: the stored actions leave the
    teacher's greedy ones by about noise x half range; without the flag they are the greedy ones."""
    from policykd.data.buffers import LabelledBuffer
    from policykd.data.teachers import load_teacher

    expert = cartpole_expert_dir.parents[2] / "agents/sac/Pendulum-v1_1"
    if not (expert / "Pendulum-v1.zip").is_file():
        pytest.skip(f"the shipped expert {expert} is missing")
    teacher, residuals = load_teacher(expert), []
    for noise in ("0", "0.25"):
        out = tmp_path / f"noise{noise}.npz"
        main(
            ["collect", "--teacher", str(expert), "--n-transitions", "400", "--action-noise", noise, "--out", str(out)]
        )
        buffer = LabelledBuffer.load(out)
        assert buffer.meta["action_noise"] == float(noise)
        batch = buffer.batch_at(np.arange(len(buffer)))
        greedy = teacher.mapper.from_teacher(batch.teacher_outputs[0], deterministic=True)
        residuals.append(batch.actions.numpy() - greedy)
    np.testing.assert_allclose(residuals[0], 0.0, atol=1e-6)
    moved = np.abs(residuals[1]) > 1e-6  # all but actions pushed past a bound they already sat on
    assert moved.mean() > 0.8 and 0.35 < residuals[1].std() < 0.65  # half range 2: noise std 0.5
