"""The imitation library's half of `vs_imitation.py`; runs inside `benchmarks/.venv-imitation`
(imitation 1.0.1, stable-baselines3 2.2.1, gymnasium 0.29), never in policykd's venv, and never
imports policykd.

    benchmarks/.venv-imitation/bin/python benchmarks/imitation_side.py JOBS.json RESULTS.json

`vs_imitation.py` writes JOBS.json and reads RESULTS.json; nothing here is meant to be run by hand.
Each job is a dict with a ``kind``:

- ``bc``: imitation's ``bc.BC`` on the first ``n_transitions`` rows of an exported ``.npz``
  (obs, acts, next_obs, dones: turned into imitation's ``Transitions``), for ``n_updates``
  batches; the time of ``BC.train`` alone gives samples per second. Writes the trained policy's
  state dict as ``.npz`` (imitation's own parameter names) plus the policy's logits / means on
  probe observations, so the other side can check its port of the weights.
- ``dagger``: imitation's ``SimpleDAggerTrainer`` with the SB3 expert loaded from its zip, in
  imitation's gymnasium; after every round the policy's weights, the expert queries so far and the
  size of the aggregated dataset are written out (returns are measured by the other side).

Both build the same student as policykd's: an MLP with the given hidden sizes and ReLU, whose
input is normalised by the same mean and std (a features extractor), with imitation's usual
``ActorCriticPolicy`` heads (a state-independent log-std for Box actions). The value branch is
reduced to one linear layer (``vf=[]``); BC never trains it, but SB3 computes it in every step.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor


class NormalizedFlatten(BaseFeaturesExtractor):
    """``(obs - mean) / std``, flattened: the same input normalisation as policykd's student."""

    def __init__(self, observation_space: gym.spaces.Box, mean: list[float], std: list[float]) -> None:
        super().__init__(observation_space, int(np.prod(observation_space.shape)))
        self.register_buffer("mean", th.as_tensor(np.asarray(mean, np.float32)))
        self.register_buffer("std", th.as_tensor(np.asarray(std, np.float32)))

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return th.flatten((observations - self.mean) / self.std, start_dim=1)


class ClipNormalize(th.nn.Module):
    """VecNormalize's observation transform in front of an expert's own features extractor."""

    def __init__(self, inner: th.nn.Module, mean: list[float], var: list[float], clip: float, eps: float) -> None:
        super().__init__()
        self.inner, self.clip = inner, clip
        self.register_buffer("mean", th.as_tensor(np.asarray(mean, np.float32)))
        self.register_buffer("std", th.sqrt(th.as_tensor(np.asarray(var, np.float32)) + eps))
        self.features_dim = getattr(inner, "features_dim", None)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.inner(th.clamp((observations - self.mean) / self.std, -self.clip, self.clip))


def make_spaces(job: dict[str, Any]) -> tuple[gym.spaces.Box, gym.spaces.Space]:
    obs = job["observation_space"]
    observation_space = gym.spaces.Box(np.asarray(obs["low"], np.float32), np.asarray(obs["high"], np.float32))
    act = job["action_space"]
    if "n" in act:
        return observation_space, gym.spaces.Discrete(int(act["n"]))
    return observation_space, gym.spaces.Box(np.asarray(act["low"], np.float32), np.asarray(act["high"], np.float32))


def make_policy(
    job: dict[str, Any], observation_space: gym.spaces.Space, action_space: gym.spaces.Space
) -> ActorCriticPolicy:
    th.manual_seed(job["seed"])
    return ActorCriticPolicy(
        observation_space=observation_space,
        action_space=action_space,
        lr_schedule=lambda _: th.finfo(th.float32).max,  # as imitation's BC does: the policy's optimiser is unused
        net_arch=dict(pi=list(job["hidden_sizes"]), vf=[]),
        activation_fn=th.nn.ReLU,
        features_extractor_class=NormalizedFlatten,
        features_extractor_kwargs=dict(mean=job["obs_mean"], std=job["obs_std"]),
    )


def make_bc(job: dict[str, Any], policy: ActorCriticPolicy, demonstrations: Any = None) -> Any:
    from imitation.algorithms import bc
    from imitation.util import logger as imit_logger

    return bc.BC(
        observation_space=policy.observation_space,
        action_space=policy.action_space,
        rng=np.random.default_rng(job["seed"]),
        policy=policy,
        demonstrations=demonstrations,
        batch_size=job["batch_size"],
        optimizer_kwargs={"lr": job["learning_rate"]},
        device="cpu",
        # No output formats: the policykd side is timed with a null logger too.
        custom_logger=imit_logger.configure(tempfile.mkdtemp(prefix="imitation-log-"), format_strs=[]),
    )


def export_policy(policy: ActorCriticPolicy, path: str, probe_obs: np.ndarray) -> None:
    """The policy's state dict as a plain ``.npz``, plus its outputs on ``probe_obs`` (``probe_out``:
    logits for Discrete, Gaussian means for Box) for the port check on the other side."""
    arrays = {k: v.detach().cpu().numpy() for k, v in policy.state_dict().items()}
    with th.no_grad():
        dist = policy.get_distribution(th.as_tensor(probe_obs, dtype=th.float32)).distribution
        arrays["probe_obs"] = probe_obs.astype(np.float32)
        arrays["probe_out"] = (dist.logits if hasattr(dist, "logits") else dist.mean).cpu().numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def run_bc(job: dict[str, Any]) -> dict[str, Any]:
    from imitation.data import types

    n = int(job["n_transitions"])
    with np.load(job["data"], allow_pickle=False) as data:
        obs, acts = data["obs"][:n], data["acts"][:n]
        next_obs, dones = data["next_obs"][:n], data["dones"][:n]
    transitions = types.Transitions(obs=obs, acts=acts, infos=np.array([{}] * n), next_obs=next_obs, dones=dones)
    observation_space, action_space = make_spaces(job)
    policy = make_policy(job, observation_space, action_space)
    trainer = make_bc(job, policy, transitions)
    started = time.perf_counter()
    trainer.train(n_batches=int(job["n_updates"]), progress_bar=False)
    train_time = time.perf_counter() - started
    if job.get("out"):
        export_policy(policy, job["out"], obs[: min(n, 256)])
    result = {
        "train_time_s": train_time,
        "samples_per_s": job["n_updates"] * job["batch_size"] / train_time,
        "n_updates": int(job["n_updates"]),
        "n_transitions": n,
    }
    if job.get("time_loader"):  # the same number of batches from BC's data loader alone, no training
        started, n_batches = time.perf_counter(), 0
        while n_batches < job["n_updates"]:
            for _ in trainer._demo_data_loader:
                n_batches += 1
                if n_batches == job["n_updates"]:
                    break
        result["loader_time_s"] = time.perf_counter() - started
    return result


def _unpickle(value: Any) -> Any:
    """One entry of an SB3 zip's ``data`` JSON: cloudpickled objects carry a ``:serialized:`` key."""
    import base64

    import cloudpickle

    if isinstance(value, dict) and ":serialized:" in value:
        return cloudpickle.loads(base64.b64decode(value[":serialized:"].encode()))
    return value


def load_expert(expert: dict[str, Any], observation_space: gym.spaces.Space, action_space: gym.spaces.Space) -> Any:
    """The SB3 expert's policy, rebuilt in this SB3 version from its zip with this gymnasium's spaces.

    Only the policy class, its kwargs and its weights are read: the zip's other pickled entries
    (spaces, schedules) were written with numpy 2 and a newer SB3 and do not unpickle here."""
    import io
    import zipfile

    with zipfile.ZipFile(expert["zip"]) as archive:
        data = json.loads(archive.read("data").decode())
        state = th.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
    policy_class, kwargs = _unpickle(data["policy_class"]), dict(_unpickle(data.get("policy_kwargs")) or {})
    if issubclass(policy_class, ActorCriticPolicy):
        kwargs.setdefault("use_sde", bool(data.get("use_sde", False)))
    policy = policy_class(observation_space, action_space, lambda _: 0.0, **kwargs)
    policy.load_state_dict(state)
    norm = expert.get("normalizer")
    if norm is not None:
        if not isinstance(policy, ActorCriticPolicy):
            raise ValueError("VecNormalize statistics are only supported for actor-critic experts here")
        wrapped = ClipNormalize(policy.features_extractor, norm["mean"], norm["var"], norm["clip"], norm["epsilon"])
        policy.features_extractor = wrapped
        policy.pi_features_extractor = wrapped
        policy.vf_features_extractor = wrapped
    return policy.eval()


def run_dagger(job: dict[str, Any]) -> dict[str, Any]:
    from imitation.algorithms import dagger
    from imitation.data import rollout
    from imitation.data.wrappers import RolloutInfoWrapper
    from imitation.util.util import make_vec_env

    rng = np.random.default_rng(job["seed"])
    venv = make_vec_env(
        job["env_id"], rng=rng, n_envs=int(job["n_envs"]), post_wrappers=[lambda env, _: RolloutInfoWrapper(env)]
    )
    expert = load_expert(job["expert"], venv.observation_space, venv.action_space)
    n_queries = 0
    predict = expert.predict

    def counting_predict(observation: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        nonlocal n_queries
        n_queries += len(observation)  # every state the expert is asked about is one label
        return predict(observation, *args, **kwargs)

    expert.predict = counting_predict  # generate_trajectories calls policy.predict on the whole batch
    policy = make_policy(job, venv.observation_space, venv.action_space)
    bc_trainer = make_bc(job, policy)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="dagger-") as scratch:
        trainer = dagger.SimpleDAggerTrainer(
            venv=venv,
            scratch_dir=scratch,
            expert_policy=expert,
            rng=rng,
            bc_trainer=bc_trainer,
            beta_schedule=dagger.LinearBetaSchedule(int(job["rampdown_rounds"])),
            custom_logger=bc_trainer.logger,
        )
        train_time = 0.0
        for round_num in range(int(job["n_rounds"])):
            # One round of SimpleDAggerTrainer.train(), written out so the policy can be exported after it.
            beta = float(trainer.beta_schedule(trainer.round_num))
            collector = trainer.create_trajectory_collector()
            sample_until = rollout.make_sample_until(
                min_timesteps=max(int(job["round_min_timesteps"]), trainer.batch_size),
                min_episodes=int(job["round_min_episodes"]),
            )
            trajectories = rollout.generate_trajectories(
                policy=expert, venv=collector, sample_until=sample_until, deterministic_policy=True, rng=collector.rng
            )
            started = time.perf_counter()
            trainer.extend_and_update(
                {"n_batches": int(job["n_updates_per_round"]), "log_rollouts_venv": None, "progress_bar": False}
            )
            train_time += time.perf_counter() - started
            out = f"{job['out_dir']}/round{round_num:02d}.npz"
            n_dataset = sum(len(t) for t in trainer._all_demos)  # the aggregated dataset BC trained on
            export_policy(policy, out, np.asarray(trainer._all_demos[0].obs[:256]))
            # With beta = 1 (round 0) this is the expert's own return in imitation's env: a check of its port.
            driver_return = float(np.mean([np.sum(t.rews) for t in trajectories]))
            rounds.append(
                {
                    "round": round_num,
                    "beta": beta,
                    "n_labels": n_queries,
                    "n_dataset": n_dataset,
                    "driver_return": driver_return,
                    "weights": out,
                }
            )
    venv.close()
    return {"rounds": rounds, "train_time_s": train_time}


def main() -> None:
    th.set_num_threads(1)
    jobs = json.loads(Path(sys.argv[1]).read_text())
    results = {}
    for name, job in jobs.items():
        run = {"bc": run_bc, "dagger": run_dagger}[job["kind"]]
        results[name] = run(job)
        print(f"imitation side: {name} done", flush=True)
    Path(sys.argv[2]).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
