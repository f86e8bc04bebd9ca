"""The yardstick for `policykd distill`'s wall time: the same job, hand-written with SB3 and torch
only, with the same budgets (CartPole PPO expert, 20 evaluation episodes for teacher, random policy
and student, 20,000 teacher-driven transitions from 8 envs, 2,000 Adam updates of a 24x24 student
on KL at tau 1, batch 256). No checks, no logging, no files but the student."""

import time

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

torch.set_num_threads(1)
torch.manual_seed(0)
started = time.perf_counter()
teacher = PPO.load("agents/ppo/CartPole-v1_1/CartPole-v1.zip", device="cpu")


def play(act, n_episodes=20, seed=10_000):
    venv = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    obs, returns = venv.reset(), []
    while len(returns) < n_episodes:
        obs, _, _, infos = venv.step(act(obs))
        returns += [info["episode"]["r"] for info in infos if "episode" in info]
    return float(np.mean(returns[:n_episodes]))


rng = np.random.default_rng(0)
teacher_return = play(lambda obs: teacher.predict(obs, deterministic=True)[0])
random_return = play(lambda obs: rng.integers(0, 2, len(obs)))

venv = make_vec_env("CartPole-v1", n_envs=8, seed=0)
obs, observations, logits = venv.reset(), [], []
for _ in range(20_000 // 8):
    with torch.no_grad():
        dist = teacher.policy.get_distribution(torch.as_tensor(obs))
    observations.append(obs)
    logits.append(dist.distribution.logits.numpy())
    obs, _, _, _ = venv.step(dist.distribution.logits.argmax(-1).numpy())
observations = torch.as_tensor(np.concatenate(observations))
targets = torch.log_softmax(torch.as_tensor(np.concatenate(logits)), -1)

student = torch.nn.Sequential(
    torch.nn.Linear(4, 24), torch.nn.ReLU(), torch.nn.Linear(24, 24), torch.nn.ReLU(), torch.nn.Linear(24, 2)
)
optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
for _ in range(2_000):
    idx = torch.as_tensor(rng.integers(0, len(observations), 256))
    log_q = torch.log_softmax(student(observations[idx]), -1)
    loss = (targets[idx].exp() * (targets[idx] - log_q)).sum(-1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

with torch.no_grad():
    student_return = play(lambda obs: student(torch.as_tensor(obs)).argmax(-1).numpy())
torch.save(student.state_dict(), "/tmp/minimal_distill_student.pt")
print(
    f"teacher {teacher_return:.1f} random {random_return:.1f} student {student_return:.1f} "
    f"in {time.perf_counter() - started:.1f} s"
)
