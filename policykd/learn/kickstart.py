"""RL with a distillation term: SB3's own algorithms whose loss is SB3's loss plus
``lambda * distill(student, teacher) - entropy_coef * H(student)`` (Kickstarting, Schmitt et al.
2018; QDagger, Agarwal et al. 2022).

``KickstartPPO("MlpPolicy", env, teacher=load_teacher(...), schedule="linear:50000")`` trains as
``PPO`` does; likewise ``KickstartA2C``, ``KickstartDQN``, ``KickstartQRDQN``, ``KickstartSAC`` and
``KickstartTD3``. The distillation term is policykd's: each teacher's raw output on the batch's
observations is softened at tau (``targets.soften``), several teachers are merged
(``merging``), and the loss (``losses.make_loss``: kl with its direction and tau, nll or mse)
scores the student's output for the same observations.

How little of SB3 is overridden: ``train()`` runs SB3's own ``train()`` unchanged, with two hooks
installed for its duration. The buffer's ``get`` (on-policy) or ``sample`` (off-policy) notes the
observations of the batch SB3 is about to learn from, and the optimiser that SB3 steps for the
policy (PPO / A2C / DQN / QR-DQN: the policy's; SAC / TD3: the actor's) gets a ``zero_grad`` that,
after zeroing, back-propagates ``lambda * distill - entropy_coef * H`` on that batch. SB3's
``loss.backward()`` then adds its gradients to those, and its gradient clipping and step see the
sum: the gradient of SB3's loss plus the distillation term. With lambda = 0 (and no entropy bonus)
the added gradient is exactly 0, so training is bit for bit SB3's (``tests/test_kickstart.py``).

For Q-learners (DQN, QR-DQN) the student's Q-values play the logits: ``kl`` is QDagger's tau-KL
(tau on both sides by default), ``mse`` the Q-value regression. SAC's actor is distilled on its
pre-tanh Gaussian from a SAC teacher; TD3's actor on the teacher's action (mse).

Logged through SB3's logger (so SB3's own tags stay for the RL part): ``distill/lambda``,
``distill/loss`` (the mean distillation loss of the last ``train()`` call), ``distill/entropy``
with an entropy bonus, and ``distill/return_ratio`` (the student's recent return / the teacher's).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import QRDQN
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.learn.losses import make_loss
from policykd.learn.merging import ensemble_teacher_kind, make_merge, single_teacher
from policykd.learn.metrics import categorical_entropy, gaussian_entropy
from policykd.learn.schedules import LambdaSchedule, PerformanceLambda, check_lambda, parse_lambda_schedule
from policykd.learn.targets import soften
from policykd.learn.trainer import resolve_temperature
from policykd.types import DISCRETE_KINDS, DistillTarget, LossFn, MergeFn, StudentOutput

KICKSTART_ALGOS = ("ppo", "a2c", "dqn", "qrdqn", "sac", "td3")
# The action spaces each algorithm handles (SB3's own list), and the teacher kinds its student learns from.
ACTION_SPACES: dict[str, tuple[type, ...]] = {
    "ppo": (gym.spaces.Discrete, gym.spaces.Box),
    "a2c": (gym.spaces.Discrete, gym.spaces.Box),
    "dqn": (gym.spaces.Discrete,),
    "qrdqn": (gym.spaces.Discrete,),
    "sac": (gym.spaces.Box,),
    "td3": (gym.spaces.Box,),
}
TEACHER_KINDS_FOR: dict[str, tuple[str, ...]] = {
    "ppo": (*DISCRETE_KINDS, "gaussian"),
    "a2c": (*DISCRETE_KINDS, "gaussian"),
    "dqn": DISCRETE_KINDS,
    "qrdqn": DISCRETE_KINDS,
    "sac": ("squashed_gaussian",),
    "td3": ("deterministic",),
}
RECENT_EPISODES = 10  # the student's return is the mean of its last 10 training episodes (CleanRL's QDagger)


def default_loss(algo: str, teacher_kind: str) -> str:
    """``mse`` for a TD3 student, else ``kl`` (QDagger's tau-KL for a Q-learner)."""
    return "mse" if algo == "td3" or teacher_kind == "deterministic" else "kl"


def check_algo_fits(algo: str, action_space: gym.spaces.Space, teacher_kind: str | None = None) -> None:
    """Refuse, in one line, an algorithm that does not fit the action space or cannot learn from
    a teacher of ``teacher_kind``."""
    if algo not in KICKSTART_ALGOS:
        raise PolicyKDError(f"unknown algorithm {algo!r} to fine-tune with; use one of {', '.join(KICKSTART_ALGOS)}")
    if not isinstance(action_space, ACTION_SPACES[algo]):
        fits = [a for a in KICKSTART_ALGOS if isinstance(action_space, ACTION_SPACES[a])]
        raise PolicyKDError(
            f"{algo.upper()} does not handle the action space {action_space}; use one of {', '.join(fits)}"
        )
    if teacher_kind is not None and teacher_kind not in TEACHER_KINDS_FOR[algo]:
        fits = [
            a
            for a in KICKSTART_ALGOS
            if teacher_kind in TEACHER_KINDS_FOR[a] and isinstance(action_space, ACTION_SPACES[a])
        ]
        raise PolicyKDError(
            f"a {algo.upper()} student cannot be distilled from a {teacher_kind} teacher (their action "
            f"distributions live in different spaces); use {' or '.join(fits)} as the student's algorithm"
        )


def check_same_spaces(teacher: Teacher, observation_space: gym.spaces.Space, action_space: gym.spaces.Space) -> None:
    """Refuse a student env whose observation or action space is not the teacher's."""
    if teacher.observation_space.shape != observation_space.shape or teacher.action_space != action_space:
        raise PolicyKDError(
            f"the student's env has observations {observation_space} and actions {action_space}, the teacher "
            f"{teacher.source} {teacher.observation_space} and {teacher.action_space}; train the student on the "
            "teacher's env (policykd finetune builds it from the teacher's recipe)"
        )


class KickstartMixin:
    """SB3's ``train()`` with a distillation term added to its loss (see the module docstring).
    Put it first among the bases: ``class KickstartPPO(KickstartMixin, PPO)``.

    ``teacher``: a Teacher (``policykd.data.teachers.load_teacher``) or several (merged by ``merge``:
    a name such as ``mean-probs`` or a MergeFn). ``schedule``: a LambdaSchedule, its text
    (``schedules.parse_lambda_schedule``: ``constant:L``, ``linear:N``, ``exponential:H``,
    ``performance``) or a number (constant lambda). ``loss``: ``kl`` | ``nll`` | ``mse`` (default: kl;
    mse for TD3) or a LossFn; ``loss_options`` go to ``losses.make_loss`` (temperature, direction,
    ...; a Q-learner's kl softens both sides by default). ``teacher_return``: G_teacher for the
    performance schedule and the logged ratio (default: the expert's recorded score; of several, the best).
    ``warmup_with_policy``: an off-policy student acts with its policy (and its exploration) during
    SB3's ``learning_starts`` steps, not uniformly at random: for a pre-trained start, whose policy
    the warm-up transitions should show (training still waits ``learning_starts`` steps)."""

    algo_name = ""

    def __init__(
        self,
        policy: Any,
        env: Any,
        *,
        teacher: Teacher | Sequence[Teacher],
        schedule: LambdaSchedule | str | float = 1.0,
        loss: str | LossFn | None = None,
        merge: str | MergeFn | None = None,
        entropy_coef: float = 0.0,
        teacher_return: float | None = None,
        loss_options: dict[str, Any] | None = None,
        warmup_with_policy: bool = False,
        **kwargs: Any,
    ) -> None:
        teachers = tuple(teacher) if isinstance(teacher, Sequence) else (teacher,)
        if not teachers:
            raise PolicyKDError("no teacher given; pass teacher=load_teacher(...)")
        kind = ensemble_teacher_kind([t.kind for t in teachers])
        check_algo_fits(self.algo_name, teachers[0].action_space, kind)
        self.distill_teachers = teachers
        self.distill_schedule = schedule if callable(schedule) else parse_lambda_schedule(schedule)
        self.distill_loss = _make_loss(self.algo_name, kind, loss, loss_options or {})
        self.distill_temperature = resolve_temperature(None, self.distill_loss)
        self.distill_merge = _make_merge(merge, len(teachers))
        self.distill_entropy_coef = check_lambda(entropy_coef, "entropy_coef")
        if self.distill_entropy_coef and self.algo_name == "td3":
            raise PolicyKDError("a TD3 actor is deterministic and has no entropy; drop entropy_coef")
        scores = [(t.score or {}).get("mean") for t in teachers]
        recorded = max((s for s in scores if s is not None), default=None)  # an ensemble's best teacher
        self.distill_teacher_return = teacher_return if teacher_return is not None else recorded
        if self.distill_teacher_return is not None and not (
            math.isfinite(float(self.distill_teacher_return)) and float(self.distill_teacher_return) != 0
        ):
            raise PolicyKDError(
                f"the teacher's return must be a finite number other than 0 (the student/teacher return ratio "
                f"divides by it), got {self.distill_teacher_return!r}; pass teacher_return= (CLI: --teacher-return)"
            )
        if _is_performance(self.distill_schedule) and self.distill_teacher_return is None:
            raise PolicyKDError(
                f"the performance lambda schedule needs the teacher's return and {teachers[0].source} records "
                f"none{'' if len(teachers) == 1 else ' (nor do the other teachers)'}; pass teacher_return= (CLI: --teacher-return)"
            )
        self.distill_lambda, self.distill_values, self._distill_obs = 0.0, [], None
        self.distill_warmup_with_policy = warmup_with_policy
        super().__init__(policy, env, **kwargs)  # type: ignore[call-arg]
        for t in teachers:
            check_same_spaces(t, self.observation_space, self.action_space)  # type: ignore[attr-defined]

    # -- the one override -----------------------------------------------------------------------
    def train(self, *args: Any, **kwargs: Any) -> None:
        self.distill_lambda = self.distill_schedule(self.num_timesteps, self.return_gap())  # type: ignore[attr-defined]
        self.distill_values = []
        with self._distill_hooks():
            super().train(*args, **kwargs)  # type: ignore[misc]
        self._record_distill()

    @contextlib.contextmanager
    def _distill_hooks(self) -> Iterator[None]:
        """Note each batch SB3 draws; after each zero_grad of the distilled optimiser, add the term's gradient."""
        on_policy = isinstance(self, OnPolicyAlgorithm)
        buffer = self.rollout_buffer if on_policy else self.replay_buffer  # type: ignore[attr-defined]
        optimizer = self._distilled_optimizer()
        draw, zero_grad = buffer.get if on_policy else buffer.sample, optimizer.zero_grad

        def get(*a: Any, **k: Any) -> Iterator[Any]:
            for batch in draw(*a, **k):
                self._distill_obs = batch.observations
                yield batch

        def sample(*a: Any, **k: Any) -> Any:
            batch = draw(*a, **k)
            self._distill_obs = batch.observations
            return batch

        def zero_grad_then_distill(*a: Any, **k: Any) -> None:
            zero_grad(*a, **k)
            if self._distill_obs is not None:
                self.distill_term(self._distill_obs).backward()

        setattr(buffer, "get" if on_policy else "sample", get if on_policy else sample)
        optimizer.zero_grad = zero_grad_then_distill
        try:
            yield
        finally:
            del buffer.__dict__["get" if on_policy else "sample"], optimizer.__dict__["zero_grad"]
            self._distill_obs = None

    def distill_term(self, observations: torch.Tensor) -> torch.Tensor:
        """``lambda * loss(student(obs), merge(soften(teachers(obs)))) - entropy_coef * H(student)``
        for a batch of observations as SB3's buffer holds them; differentiable in the student."""
        raw = observations.detach().cpu().numpy()
        if self._vec_normalize_env is not None:  # type: ignore[attr-defined]
            raw = self._vec_normalize_env.unnormalize_obs(raw)  # type: ignore[attr-defined]
        targets = [soften(t(raw), self.distill_temperature) for t in self.distill_teachers]
        target = _to_device(self.distill_merge(targets), observations.device)
        student = self.student_output(observations)
        out = self.distill_loss(student, target)
        self.distill_values.append(out.metrics["losses/distill"])
        term = self.distill_lambda * out.loss
        if self.distill_entropy_coef:
            term = term - self.distill_entropy_coef * _entropy(student).mean()
        return term

    def student_output(self, observations: torch.Tensor) -> StudentOutput:
        """The student's output for the batch, with gradient (each algorithm defines it)."""
        raise NotImplementedError

    def _distilled_optimizer(self) -> torch.optim.Optimizer:
        return self.policy.optimizer  # type: ignore[attr-defined]

    def _sample_action(self, learning_starts: int, *args: Any, **kwargs: Any) -> Any:
        """SB3's off-policy action choice; with ``warmup_with_policy`` no step counts as warm-up
        (SB3's only use of ``learning_starts`` here is to act at random before it)."""
        if self.distill_warmup_with_policy:
            learning_starts = 0
        return super()._sample_action(learning_starts, *args, **kwargs)  # type: ignore[misc]

    # -- lambda and logging ---------------------------------------------------------------------
    def recent_return(self) -> float | None:
        """The mean return of the student's last RECENT_EPISODES training episodes (None before one ends)."""
        episodes = list(self.ep_info_buffer or [])[-RECENT_EPISODES:]  # type: ignore[attr-defined]
        return float(np.mean([e["r"] for e in episodes])) if episodes else None

    def return_gap(self) -> float | None:
        """``(G_teacher - G_student) / |G_teacher|``: 1 - the return ratio for a positive teacher return."""
        student, teacher = self.recent_return(), self.distill_teacher_return
        if student is None or teacher is None:
            return None
        return (float(teacher) - student) / abs(float(teacher))

    def _record_distill(self) -> None:
        self.logger.record("distill/lambda", self.distill_lambda)  # type: ignore[attr-defined]
        if self.distill_values:
            self.logger.record("distill/loss", float(np.mean(self.distill_values)))  # type: ignore[attr-defined]
        student, teacher = self.recent_return(), self.distill_teacher_return
        if student is not None and teacher is not None:
            self.logger.record("distill/return_ratio", student / float(teacher))  # type: ignore[attr-defined]

    def _excluded_save_params(self) -> list[str]:
        """The teachers, schedule and loss stay out of the zip, so ``PPO.load`` etc. read it."""
        names = [name for name in vars(self) if name.startswith(("distill_", "_distill_"))]
        return [*super()._excluded_save_params(), *names]  # type: ignore[misc]


def _make_loss(algo: str, kind: str, loss: str | LossFn | None, options: dict[str, Any]) -> LossFn:
    if loss is not None and not isinstance(loss, str):
        return loss
    name = loss or default_loss(algo, kind)
    if algo in ("dqn", "qrdqn") and name == "kl":
        options = {"temperature_on": "both", **options}  # QDagger's tau-KL softens both Q-value sets
    if algo in ("ppo", "a2c") and name == "mse" and kind in DISCRETE_KINDS:
        raise PolicyKDError(f"mse fits Q-values, and a {algo.upper()} student has logits; use --loss kl or nll")
    return make_loss(name, kind, **options)  # type: ignore[arg-type]


def _make_merge(merge: str | MergeFn | None, n_teachers: int) -> MergeFn:
    if merge is None:
        return single_teacher if n_teachers == 1 else make_merge("mean-probs")
    return make_merge(merge) if isinstance(merge, str) else merge


def _is_performance(schedule: Callable[..., float]) -> bool:
    return isinstance(schedule, PerformanceLambda)


def _to_device(target: DistillTarget, device: torch.device) -> DistillTarget:
    return target._replace(
        **{f: getattr(target, f).to(device) for f in target._fields[1:] if getattr(target, f) is not None}
    )


def _entropy(student: StudentOutput) -> torch.Tensor:
    """The student's entropy (B,) with gradient: of softmax(logits), or of its (pre-tanh) Gaussian."""
    if student.kind == "discrete":
        return categorical_entropy(torch.log_softmax(student.logits, dim=-1))  # type: ignore[arg-type]
    return gaussian_entropy(student.log_std)  # type: ignore[arg-type]


# -- the algorithms: what the student outputs for a batch ------------------------------------------


class KickstartPPO(KickstartMixin, PPO):
    """SB3's PPO with a distillation term (see :class:`KickstartMixin`)."""

    algo_name = "ppo"

    def student_output(self, observations: torch.Tensor) -> StudentOutput:
        return actor_critic_output(self.policy, observations)


class KickstartA2C(KickstartMixin, A2C):
    """SB3's A2C with a distillation term (see :class:`KickstartMixin`)."""

    algo_name = "a2c"

    def student_output(self, observations: torch.Tensor) -> StudentOutput:
        return actor_critic_output(self.policy, observations)


class KickstartDQN(KickstartMixin, DQN):
    """SB3's DQN with QDagger's tau-KL (or Q-value mse) toward the teacher (see :class:`KickstartMixin`)."""

    algo_name = "dqn"

    def student_output(self, observations: torch.Tensor) -> StudentOutput:
        return StudentOutput("discrete", logits=self.policy.q_net(observations))


class KickstartQRDQN(KickstartMixin, QRDQN):
    """sb3-contrib's QR-DQN with a distillation term on its mean-over-quantiles Q-values."""

    algo_name = "qrdqn"

    def student_output(self, observations: torch.Tensor) -> StudentOutput:
        return StudentOutput("discrete", logits=self.policy.quantile_net(observations).mean(dim=1))


class KickstartSAC(KickstartMixin, SAC):
    """SB3's SAC whose actor is also distilled toward a SAC teacher's pre-tanh Gaussian."""

    algo_name = "sac"

    def student_output(self, observations: torch.Tensor) -> StudentOutput:
        mean, log_std, _ = self.actor.get_action_dist_params(observations)
        return StudentOutput("gaussian", mean=mean, log_std=log_std)

    def _distilled_optimizer(self) -> torch.optim.Optimizer:
        return self.actor.optimizer


class KickstartTD3(KickstartMixin, TD3):
    """SB3's TD3 whose actor is also regressed onto a TD3 teacher's action."""

    algo_name = "td3"

    def student_output(self, observations: torch.Tensor) -> StudentOutput:
        return StudentOutput("deterministic", action=self.actor(observations))

    def _distilled_optimizer(self) -> torch.optim.Optimizer:
        return self.actor.optimizer


def actor_critic_output(policy: Any, observations: torch.Tensor) -> StudentOutput:
    """A PPO / A2C policy's action distribution for ``observations``: logits, or mean and log-std.
    SB3 reuses one Distribution object per policy; its tensors are taken at once."""
    dist = policy.get_distribution(observations).distribution
    if isinstance(policy.action_space, gym.spaces.Discrete):
        return StudentOutput("discrete", logits=dist.logits)
    return StudentOutput("gaussian", mean=dist.mean, log_std=dist.stddev.log())


KICKSTART_CLASSES: dict[str, type] = {
    "ppo": KickstartPPO,
    "a2c": KickstartA2C,
    "dqn": KickstartDQN,
    "qrdqn": KickstartQRDQN,
    "sac": KickstartSAC,
    "td3": KickstartTD3,
}
