"""``policykd finetune``: train a student with the environment's reward plus a distillation term
toward the teacher (``learn/kickstart.py``), with SB3's own algorithm and rl-zoo's hyperparameters.

The student starts from scratch (``--net-fraction`` of the teacher's layers), from a distilled
policykd student (a run folder of ``policykd distill``) or from the teacher's weights
(``learn/kickstart_start.py``). It trains in the teacher's env recipe, on raw observations (a
distilled student carries its own normalisation; an rl-zoo ``normalize: true`` is not applied and
the summary says so). The run folder holds ``config.yml`` / ``state.json`` (``jobs/run_folder.py``),
``model.zip`` (an SB3 zip: ``PPO.load`` etc. read it), ``tb/`` (SB3's TensorBoard tags plus
``distill/*`` and ``eval/student_return``) and ``summary.json``: the student's and the teacher's
returns on the same evaluation episodes, and the learning curve (``--eval-every-steps``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from policykd.checks import check_int, check_out_dir
from policykd.errors import PolicyKDError
from policykd.fileio import write_json_atomic
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, ReturnStats, evaluate_policy, evaluate_teacher
from policykd.jobs.resolve import resolve_teacher
from policykd.jobs.run_folder import check_reusable, claim_run_folder, run_folder
from policykd.learn.schedules import check_lambda, parse_lambda_schedule
from policykd.zoo.presets import load_preset

SUMMARY_FILE, MODEL_FILE, TB_DIR = "summary.json", "model.zip", "tb"


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    teacher: str | None = None
    """rl-zoo folder, SB3 .zip or hub id (default: the env preset's expert)."""
    env_id: str | None = None
    zoo_dir: str | None = None
    trust_pickles: bool = False
    algo: str | None = None
    """The student's SB3 algorithm: ppo | a2c | dqn | qrdqn | sac | td3 (default: the teacher's)."""
    start: str = "scratch"
    """scratch | teacher (its weights) | a run folder of ``policykd distill`` (its student)."""
    net_fraction: float = 1.0
    """With ``start=scratch``: the student's hidden sizes as a fraction of the teacher's."""
    schedule: str = "constant:1"
    """lambda over env steps: constant:L | linear:N | exponential:H | performance (schedules.parse_lambda_schedule)."""
    entropy_coef: float = 0.0
    """An entropy bonus on the student, added with the distillation term."""
    n_timesteps: int = 50_000
    """Env steps of RL training."""
    loss: str | None = None
    """kl | nll | mse (default kl, QDagger's tau-KL for DQN / QR-DQN; mse for TD3)."""
    temperature: float = 1.0
    temperature_on: str | None = None
    """teacher | both (default: both for a Q-learner's tau-KL, else teacher)."""
    kl_direction: str = "forward"
    tau2_scaling: bool = False
    center_q: bool = True
    nll_min_std: float = 0.1
    label_smoothing: float = 0.0
    hard_label_weight: float = 0.0
    """kl: L = L_soft + lambda * L_hard and the target mixed with uniform, as distill's (losses.KLLoss)."""
    value_init: int = 0
    """PPO / A2C: fit the student's value head to the teacher's value on this many observations the
    student visits, before RL (0: no)."""
    teacher_return: float | None = None
    """G_teacher of the performance schedule and the return ratio (default: the expert's recorded score)."""
    seed: int = 0
    n_eval_episodes: int | None = None
    """Episodes per evaluation (default: the env preset's)."""
    eval_every_steps: int = 0
    """Env steps between evaluations for the learning curve (0: only before and after training)."""
    out_dir: str | None = None
    overwrite: bool = False
    progress_bar: bool = True
    device: str = "cpu"
    """Torch device of the student's RL training and the teacher's labels: cpu | cuda | cuda:N | auto (``--device``)."""


class SB3Actor:
    """An SB3 model as a ``jobs.evaluate.Policy``: ``act(obs, deterministic, rng)`` -> env actions."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def act(self, observations: np.ndarray, deterministic: bool = True, rng: Any = None) -> np.ndarray:
        return self.model.predict(observations, deterministic=deterministic)[0]


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Build the student, train it with reward + lambda * distillation, evaluate it against the
    teacher on the same episodes; write the run folder. Returns the summary (``summary.json``)."""
    from policykd.learn.kickstart import check_algo_fits

    started = time.perf_counter()
    _check_options(config)
    options = {"trust_pickles": config.trust_pickles, "zoo_dir": config.zoo_dir, "device": config.device}
    teacher = resolve_teacher(config.teacher, config.env_id, **options)
    algo = config.algo or teacher.algo
    check_algo_fits(algo, teacher.action_space, teacher.kind)
    setup = plan_model(config, teacher, algo)
    n_eval = config.n_eval_episodes or int(load_preset(teacher.recipe.env_id).get("n_eval_episodes", 10))
    eval_seed = config.seed + EVAL_SEED_OFFSET
    teacher_stats = evaluate_teacher(teacher, n_eval, eval_seed)
    out_dir = claim_run_folder(config.out_dir, _default_folder(config, teacher.recipe.env_id, algo))
    with run_folder(out_dir, dataclasses.asdict(config), config.overwrite):
        model = build_model(config, teacher, algo, setup, out_dir / TB_DIR)
        value_init = init_value(model, teacher, config.value_init, config.seed)
        curve = EvalCurve(teacher.recipe, n_eval, eval_seed, config.eval_every_steps)
        model.learn(config.n_timesteps, callback=curve.callback(), tb_log_name="finetune")
        student_stats = evaluate_policy(SB3Actor(model), teacher.recipe, n_eval, seed=eval_seed)
        curve.add(int(model.num_timesteps), student_stats)
        model.save(out_dir / MODEL_FILE)
        summary = _summary(config, teacher, algo, setup, student_stats, teacher_stats, curve.points)
        summary["value_init"] = value_init
        summary.update(out_dir=str(out_dir), wall_time_s=time.perf_counter() - started)
        write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary


def init_value(model: Any, teacher: Any, n_observations: int, seed: int) -> dict[str, float] | None:
    """Distil the teacher's value into the student's value head on ``n_observations`` states the
    student visits (kickstart_start.distill_value); None when ``n_observations`` is 0."""
    if not n_observations:
        return None
    from policykd.data.envs import make_vec_env
    from policykd.learn.kickstart_start import distill_value

    venv = make_vec_env(teacher.recipe, 8, seed + 1)  # not the training envs' seeds
    observations, obs = [], venv.reset()
    while len(observations) * venv.num_envs < n_observations:
        observations.append(obs)
        obs = venv.step(model.predict(obs, deterministic=False)[0])[0]
    venv.close()
    before, after = distill_value(model, teacher, np.concatenate(observations)[:n_observations], seed=seed)
    return {"n_observations": n_observations, "mse_before": before, "mse_after": after}


def _check_options(config: FinetuneConfig) -> None:
    """Everything checkable without loading anything, before any file is written."""
    check_int("--timesteps", config.n_timesteps, 1)
    check_int("--eval-every-steps", config.eval_every_steps, 0)
    check_int("--seed", config.seed, 0)
    check_int("--value-init", config.value_init, 0)
    if config.n_eval_episodes is not None:
        check_int("--eval-episodes", config.n_eval_episodes, 1)
    parse_lambda_schedule(config.schedule)
    check_lambda(config.entropy_coef, "--entropy-coef")
    if config.net_fraction != 1.0 and config.start != "scratch":
        raise PolicyKDError(f"--net-fraction sizes a student started from scratch, not from {config.start}; drop it")
    check_out_dir(config.out_dir)
    if config.out_dir is not None:
        check_reusable(config.out_dir, config.overwrite)


@dataclasses.dataclass
class ModelPlan:
    """What the SB3 model is built with, resolved before the run folder is written."""

    policy: str
    n_envs: int
    kwargs: dict[str, Any]  # the algorithm's keyword arguments (rl-zoo's, policy_kwargs set for the start)
    hyperparams_source: str
    not_applied: dict[str, Any]  # rl-zoo keys this job does not apply (normalize, ...)
    student: Any = None  # the distilled student to copy in (start from a run folder)
    student_loss: str | None = None


def plan_model(config: FinetuneConfig, teacher: Any, algo: str) -> ModelPlan:
    """rl-zoo's hyperparameters for ``algo`` on the teacher's env, with ``policy_kwargs`` for the start point."""
    from policykd.learn.kickstart_start import scaled_net_arch, student_policy_kwargs, teacher_policy_kwargs
    from policykd.zoo.hyperparams import algorithm_kwargs, zoo_hyperparams

    folder = teacher.source if teacher.algo == algo and Path(teacher.source).is_dir() else None
    raw, source = zoo_hyperparams(algo, teacher.recipe.env_id, folder)
    kwargs, zoo = algorithm_kwargs(raw)
    _action_noise(kwargs, zoo, teacher.action_space)
    plan = ModelPlan(str(zoo.pop("policy", "MlpPolicy")), int(zoo.pop("n_envs", 1)), kwargs, source, zoo)
    zoo.pop("n_timesteps", None)
    base = kwargs.get("policy_kwargs") or {}
    if config.start == "scratch":
        if config.net_fraction != 1.0:
            kwargs["policy_kwargs"] = {**base, "net_arch": scaled_net_arch(teacher, config.net_fraction)}
    elif config.start == "teacher":
        kwargs["policy_kwargs"] = teacher_policy_kwargs(teacher, algo)
    else:
        from policykd.jobs.load import open_student

        opened = open_student(config.start)
        plan.student, plan.student_loss = opened.student, (opened.summary or {}).get("loss")
        kwargs["policy_kwargs"] = student_policy_kwargs(opened.student, algo, base)
    return plan


def _action_noise(kwargs: dict[str, Any], zoo: dict[str, Any], action_space: Any) -> None:
    """rl-zoo's ``noise_type`` / ``noise_std`` (SAC, TD3) as SB3's action noise."""
    noise_type, noise_std = kwargs.pop("noise_type", None), kwargs.pop("noise_std", None)
    if noise_type is None:
        return
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    classes = {"normal": NormalActionNoise, "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise}
    if noise_type not in classes:
        zoo["noise_type"] = noise_type
        return
    dim = int(np.prod(action_space.shape))
    kwargs["action_noise"] = classes[noise_type](np.zeros(dim), float(noise_std or 0.1) * np.ones(dim))


def build_model(config: FinetuneConfig, teacher: Any, algo: str, plan: ModelPlan, tb_dir: Path | None) -> Any:
    """The Kickstart model on the teacher's env recipe, with the start point's weights copied in."""
    from policykd.data.envs import make_vec_env
    from policykd.learn.kickstart import KICKSTART_CLASSES
    from policykd.learn.kickstart_start import copy_student_weights, copy_teacher_weights

    loss_options = {"temperature": config.temperature, "direction": config.kl_direction}
    loss_options.update(tau2_scaling=config.tau2_scaling, center_q=config.center_q, nll_min_std=config.nll_min_std)
    loss_options.update(hard_label_weight=config.hard_label_weight, label_smoothing=config.label_smoothing)
    if config.temperature_on is not None:
        loss_options["temperature_on"] = config.temperature_on
    env = make_vec_env(teacher.recipe, plan.n_envs, config.seed)
    try:
        model = KICKSTART_CLASSES[algo](
            plan.policy,
            env,
            teacher=teacher,
            schedule=config.schedule,
            loss=config.loss,
            loss_options=loss_options,
            entropy_coef=config.entropy_coef,
            teacher_return=config.teacher_return,
            seed=config.seed,
            device=teacher.device,  # --device, resolved with the teacher
            tensorboard_log=None if tb_dir is None else str(tb_dir),
            **plan.kwargs,
        )
    except TypeError as err:  # a hyperparameter the algorithm does not take
        raise PolicyKDError(f"{plan.hyperparams_source}: {err}; remove that key for {algo.upper()}") from None
    if config.start == "teacher":
        copy_teacher_weights(model, teacher)
    elif plan.student is not None:
        copy_student_weights(model, plan.student, algo, plan.student_loss)
    return model


class EvalCurve:
    """The student's evaluation return before training and every ``every`` env steps (0: before and
    at the end only), logged as ``eval/student_return``; ``points`` are ``[steps, mean, ci low, ci high]``.
    Evaluations run when a rollout starts, after SB3's ``train()`` on the steps so far: an on-policy
    rollout (LunarLander PPO: 16,384 steps) updates the policy only at its end."""

    def __init__(self, recipe: Any, n_episodes: int, seed: int, every: int) -> None:
        self.recipe, self.n_episodes, self.seed, self.every = recipe, n_episodes, seed, every
        self.points: list[list[float]] = []

    def evaluate(self, model: Any) -> None:
        self.add(
            int(model.num_timesteps), evaluate_policy(SB3Actor(model), self.recipe, self.n_episodes, seed=self.seed)
        )
        model.logger.record("eval/student_return", self.points[-1][1])

    def add(self, steps: int, stats: ReturnStats) -> None:
        """A point measured elsewhere (the job's final evaluation), unless one exists at ``steps``."""
        if not self.points or self.points[-1][0] != steps:
            self.points.append([steps, stats.mean, *stats.ci95])

    def callback(self) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        curve = self

        class _Callback(BaseCallback):
            def _on_training_start(self) -> None:
                curve.evaluate(self.model)
                self.next_eval = curve.every

            def _on_rollout_start(self) -> None:
                if curve.every and self.model.num_timesteps >= self.next_eval:
                    curve.evaluate(self.model)
                    while self.next_eval <= self.model.num_timesteps:
                        self.next_eval += curve.every

            def _on_step(self) -> bool:
                return True

        return _Callback()


def _summary(
    config: FinetuneConfig,
    teacher: Any,
    algo: str,
    plan: ModelPlan,
    student: ReturnStats,
    teacher_stats: ReturnStats,
    curve: list[list[float]],
) -> dict[str, Any]:
    return {
        "env_id": teacher.recipe.env_id,
        "teacher": teacher.source,
        "teacher_algo": teacher.algo,
        "algo": algo,
        "start": config.start,
        "schedule": config.schedule,
        "n_timesteps": config.n_timesteps,
        "n_envs": plan.n_envs,
        "hyperparams_source": plan.hyperparams_source,
        "hyperparams_not_applied": {k: str(v) for k, v in plan.not_applied.items()},
        "student_return": student.to_json(),
        "teacher_return": teacher_stats.to_json(),
        "return_ratio": student.mean / teacher_stats.mean if teacher_stats.mean else None,
        "curve": curve,
        "seed": config.seed,
    }


def _default_folder(config: FinetuneConfig, env_id: str, algo: str) -> Path:
    start = config.start if config.start in ("scratch", "teacher") else "student"
    schedule = config.schedule.replace(":", "")
    return Path("runs") / env_id.replace("/", "-") / f"finetune-{algo}-{start}-{schedule}-seed{config.seed}"
