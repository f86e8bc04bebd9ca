"""Atari's evaluation protocol reaches collection (issue 22): where a run scores its teacher and
student by sampling their policies (Atari, as rl-zoo trains and scores its experts), the teacher
that drives collection samples too, so the buffer holds the states the scored teacher visits;
where evaluation is greedy, collection stays greedy."""

from __future__ import annotations

import numpy as np
import pytest

from policykd.jobs.collect import collect
from policykd.jobs.config import CollectConfig
from policykd.zoo.presets import ZOO_DIR

PONG = ZOO_DIR / "ppo" / "PongNoFrameskip-v4_1"
CARTPOLE = ZOO_DIR / "ppo" / "CartPole-v1_1"


def _collected(source, n: int, seed: int = 0):
    config = CollectConfig(teacher=str(source), n_transitions=n, n_envs=2, epsilon=0.0, seed=seed,
                           teacher_check=False, progress_bar=False)  # fmt: skip
    buffer, _, _ = collect(config)
    greedy = buffer.column("teacher_logits")[:, 0].argmax(axis=1)
    return buffer, buffer.column("actions"), greedy


def test_atari_collection_samples_the_teacher_as_its_evaluation_does():
    pytest.importorskip("ale_py")
    if not (PONG / "expert.json").is_file():
        pytest.skip("the zoo's Pong expert is not shipped")
    buffer, actions, greedy = _collected(PONG, 64)
    assert buffer.meta["teacher_acts"] == "sampled"
    # Pong's PPO teacher has about 1 nat of entropy: sampled actions leave its argmax often
    assert (actions != greedy).mean() > 0.05
    _, again, _ = _collected(PONG, 64)
    np.testing.assert_array_equal(actions, again)  # the samples are seeded


def test_collection_stays_greedy_where_evaluation_is_greedy():
    buffer, actions, greedy = _collected(CARTPOLE, 256)
    assert buffer.meta["teacher_acts"] == "greedy"
    np.testing.assert_array_equal(actions, greedy)
