"""The configs of the distill job (one or several teachers, one or several tasks) and of collection,
and the distillation loss's options that distill and finetune share (LossOptions). Each field's
docstring is its help; the CLI builds its options from these fields."""

from __future__ import annotations

import dataclasses
from typing import Any

from policykd.errors import PolicyKDError


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossOptions:
    """The distillation loss's options that ``policykd distill`` (DistillConfig) and ``policykd
    finetune`` (jobs/finetune.FinetuneConfig) share, declared here once; each config inherits them
    (same names in config.yml and the same CLI flags). ``loss``, ``temperature`` and
    ``temperature_on`` are each config's own: their defaults differ. Keyword-only, so that a
    config's own fields keep their positions in its ``__init__``."""

    kl_direction: str = "forward"
    """forward = KL(teacher || student), reverse = KL(student || teacher) (see losses.KLLoss)."""
    tau2_scaling: bool = False
    """Multiply the KL by tau^2 (Hinton et al.)."""
    center_q: bool = True
    """Q-value MSE on Q minus its mean over actions (see losses.MSELoss)."""
    nll_min_std: float = 0.1
    """Floor on the student's std in the continuous nll loss (see losses.NLLLoss); 0 disables it."""
    hard_label_weight: float = 0.0
    """kl only: lambda of L = L_soft + lambda * L_hard (see losses.KLLoss); 0 is plain kl."""
    label_smoothing: float = 0.0
    """kl on discrete teachers: the target mixed with uniform, (1 - eps) p + eps / |A|; 0 is plain kl."""

    def loss_kwargs(self) -> dict[str, Any]:
        """These options as ``losses.make_loss`` (and the Kickstart classes' ``loss_options``) take them."""
        return {
            "direction": self.kl_direction,
            "tau2_scaling": self.tau2_scaling,
            "center_q": self.center_q,
            "nll_min_std": self.nll_min_std,
            "hard_label_weight": self.hard_label_weight,
            "label_smoothing": self.label_smoothing,
        }


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    teacher: str | None = None
    """Teacher source: rl-zoo folder, SB3 .zip or hub id (default: the env preset's expert)."""
    env_id: str | None = None
    """Env id (default: the teacher's, or CartPole-v1)."""
    n_transitions: int | None = None
    """Labelled transitions to collect (default: the preset's)."""
    n_envs: int | None = None
    epsilon: float | None = None
    """Epsilon-greedy exploration for discrete actions."""
    action_noise: float | None = None
    """Gaussian action noise for continuous actions, as a fraction of the half range."""
    seed: int = 0
    teacher_check: bool = True
    """Play the teacher first and refuse it if it is no better than a uniformly random policy or far
    below its recorded score."""
    trust_pickles: bool = False
    """Read the teachers' pickles and env wrappers as SB3 does (files you trust: they may run code)."""
    zoo_dir: str | None = None
    """The expert zoo the presets' experts are read from (default: presets.find_zoo)."""
    progress_bar: bool = True
    """Progress bars with an ETA on stderr (shown on a terminal only)."""
    teachers: tuple[str, ...] = ()
    """Several teachers of one env (an ensemble); overrides ``teacher``."""
    merge: str | None = None
    """How several teachers' targets combine (merging.MERGE_NAMES; default mean-probs)."""
    teacher_weights: tuple[float, ...] | None = None
    """Per-teacher weights for the merge (default equal)."""
    teacher_drive: str = "merged"
    """Who acts among several teachers while collecting: merged | round-robin | random | first."""
    preset: str = "auto"
    """``auto``: the env's preset (envs/<EnvId>.yml) where it has one; ``none``: every default
    derived from the teacher (its domain's budgets, a student of a share of its parameters)."""
    device: str = "cpu"
    """Torch device of teacher labelling, student training and evaluation: cpu | cuda | cuda:N | auto
    (policykd.devices.resolve_device; auto: cuda for image observations when a GPU is visible)."""
    backend: str = "local"
    """Where collection runs: local (this process) or ray (a Ray task per worker; jobs/ray_backend.py)."""
    workers: int = 1
    """Collection workers, each with its own envs and teacher copies, sharing the transitions
    (worker w seeded seed + w * n_envs; jobs/ray_backend.py)."""
    ray_address: str | None = None
    """A running Ray cluster to join (``ray.init(address=...)``); default: a local Ray started for the run."""
    vec_env: str = "dummy"
    """How each worker steps its envs: dummy (one vector env in this process) or subproc (two env
    groups in subprocesses, one stepping while the other is labelled; data/overlap.py)."""


@dataclasses.dataclass(frozen=True)
class DistillConfig(CollectConfig, LossOptions):
    buffer: str | None = None
    """Train from this saved buffer instead of collecting."""
    tasks: tuple[tuple[str, str | None], ...] = ()
    """Several tasks into one student: (env id, teacher source or None for the preset's expert) per
    task. Each task gets its own buffer, input layer and head around one shared trunk."""
    task_weights: tuple[float, ...] | None = None
    """Share of each batch per task (default equal); several tasks only."""
    input_width: int | None = None
    """Width of each vector task's own input layer (default 64); several tasks only."""
    loss: str | None = None
    """kl | nll | mse (default: kl; mse for a deterministic TD3 / DDPG teacher: resolve.run_loss)."""
    temperature: float | None = None
    """tau (default 1; with ``kl`` and a Q-value or quantile teacher, the confidence temperature of the
    collected Q-values: learn/targets.confidence_temperature)."""
    temperature_on: str = "teacher"
    hidden_sizes: tuple[int, ...] | None = None
    cnn_width: float | None = None
    student_fraction: float | None = None
    """The student's size as a share of the teacher's acting parameters (default 0.25 where no
    preset applies; given, it replaces the preset's size). Not with ``hidden_sizes``."""
    n_updates: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    n_eval_episodes: int | None = None
    eval_every: int | None = None
    """Updates between evaluations (0: only after the last one; default: n_updates // 4, so a run
    logs four evaluation points; the final evaluation, and so the summary, is the same either way)."""
    out_dir: str | None = None
    """The run folder (default: a new ``runs/<env>/<loss>-tau<t>-seed<s>``)."""
    overwrite: bool = False
    """Empty ``out_dir`` and run again when it holds an earlier run (refused otherwise)."""
    video: bool = False
    """After training, record the teacher and the student on the first evaluation episodes
    (``<run>/videos/``; see jobs/video.py)."""
    video_episodes: int = 1
    """Episodes recorded per policy with ``video``."""
    resume: bool = False
    """Continue the stopped run in ``out_dir`` (same options): its saved buffers, baselines and
    training checkpoint are used; a folder with no run yet starts one."""
    checkpoint_every_s: float = 30.0
    """Seconds between training checkpoints (also written around evaluations and on SIGINT / SIGTERM)."""
    student_sampling: str = "teacher"
    """How the student acts when evaluated stochastically (a preset's ``deterministic_eval: false``, as
    Atari's; ``policykd evaluate --stochastic``): ``teacher``: as its teacher does, so a DQN / QR-DQN
    teacher's student acts epsilon-greedily with the teacher's saved exploration rate and any other
    samples its distribution; ``distribution``: sample its distribution (resolve.student_exploration_rate).
    One task only: a multi-task student samples its distribution."""


def parse_task(text: str) -> tuple[str, str | None]:
    """``ENV=TEACHER`` or ``ENV`` (the preset's expert), as ``--task`` takes it."""
    env_id, _, teacher = text.partition("=")
    if not env_id:
        raise PolicyKDError(f"--task {text!r}: write ENV_ID=TEACHER, e.g. CartPole-v1=agents/ppo/CartPole-v1_1")
    return env_id, teacher or None
