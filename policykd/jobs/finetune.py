"""``policykd finetune``: train a student with the environment's reward plus a distillation term
toward the teacher (``learn/kickstart.py``), with SB3's own algorithm and rl-zoo's hyperparameters.

Several ``--teacher`` (an ensemble of one env, as ``policykd distill`` takes it) give the term one
target, their softened outputs merged by ``--merge`` / ``--teacher-weights`` (``learn/merging.py``);
the first teacher gives the env recipe, rl-zoo's hyperparameters, ``--start teacher``'s weights and
``--value-init``'s values; every teacher plays the evaluation episodes, and the student is compared
with the best of them.

The student starts from scratch (``--net-fraction`` of the teacher's layers), from a distilled
policykd student (a run folder of ``policykd distill``) or from the teacher's weights
(``learn/kickstart_start.py``). It trains in the teacher's env recipe. A teacher trained with
VecNormalize, or rl-zoo hyperparameters that say ``normalize``, put SB3's VecNormalize around the
student's env (``data/vec_normalize.py``): its observation statistics start from the teacher's, so
the student reads what the teacher reads, and they keep updating as rl-zoo's training does; the
rewards are normalised as the hyperparameters say (rl-zoo's recipe, with the algorithm's gamma).
The distillation term gives the teacher the env's raw observations, which it normalises itself.

The run folder holds ``config.yml`` / ``state.json`` (``jobs/run_folder.py``), ``model.zip`` (an SB3
zip: ``PPO.load`` etc. read it; of a dict-observation env, a MultiInputPolicy that takes its dicts),
``vecnormalize.json`` when the env was normalised (read it back with
``data.vec_normalize.load_vec_normalize``), ``tb/`` (SB3's TensorBoard tags plus ``distill/*`` and
``eval/student_return``), ``best_model.zip`` (with ``best_vecnormalize.json``: the weights of the
learning curve's best evaluation, on validation episodes) and ``summary.json``: the final student's,
the best checkpoint's and the teacher's returns on the same held-out evaluation episodes, and the
learning curve (``--eval-every-steps``). While it runs, checkpoints (``jobs/finetune_run.py``) let
``--resume`` continue a stopped run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policykd.checks import check_int, check_out_dir, check_probability
from policykd.errors import PolicyKDError
from policykd.fileio import atomic_path, write_json_atomic
from policykd.jobs.config import CollectConfig, LossOptions
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, ReturnStats, evaluate_policy, evaluate_teacher
from policykd.jobs.finetune_run import (
    VALIDATION_SEED_OFFSET,
    EvalCurve,
    FinetuneRun,
    SB3Actor,
    remove_checkpoints,
)
from policykd.jobs.resolve import make_run_merge, resolve_teachers
from policykd.jobs.run_folder import (
    check_resume_options,
    check_run_folder,
    claim_run_folder,
    finished_summary,
    run_folder,
)
from policykd.learn.schedules import check_lambda, parse_lambda_schedule
from policykd.zoo.presets import load_preset

SUMMARY_FILE, MODEL_FILE, TB_DIR, VEC_NORMALIZE_FILE = "summary.json", "model.zip", "tb", "vecnormalize.json"
BEST_MODEL_FILE, BEST_VEC_NORMALIZE_FILE = "best_model.zip", "best_vecnormalize.json"
# the FinetuneConfig fields that name the teachers, as CollectConfig has them (resolve_ensemble)
TEACHER_FIELDS = ("teacher", "teachers", "env_id", "trust_pickles", "zoo_dir", "device", "merge", "teacher_weights")
# FinetuneConfig fields that change no result: a run resumes whatever they were
RESUME_MAY_DIFFER = ("out_dir", "overwrite", "resume", "progress_bar", "checkpoint_every_s", "device")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(LossOptions):
    """The finetune job's options; the distillation loss's shared ones (``kl_direction`` ...) come from
    jobs/config.LossOptions, as distill's do."""

    teacher: str | None = None
    """rl-zoo folder, SB3 .zip or hub id (default: the env preset's expert)."""
    teachers: tuple[str, ...] = ()
    """Several teachers of one env (an ensemble): the distillation term's target merges theirs;
    overrides ``teacher``. The first gives the env recipe, the hyperparameters and the start."""
    merge: str | None = None
    """How several teachers' targets combine (merging.MERGE_NAMES; default mean-probs)."""
    teacher_weights: tuple[float, ...] | None = None
    """Per-teacher weights for the merge (default equal)."""
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
    exploration_initial_eps: float | None = None
    """DQN / QR-DQN: epsilon when training starts (default: from scratch, the hyperparameters' (SB3:
    1.0); from a pre-trained start, the teacher or a distilled student, their final epsilon
    (``exploration_final_eps``, SB3: 0.05), so that random actions do not throw away the policy the
    student starts with). Recorded in summary.json (``exploration``)."""
    value_init: int = 0
    """PPO / A2C: fit the student's value head to the teacher's value on this many observations the
    student visits, before RL (0: no)."""
    teacher_return: float | None = None
    """G_teacher of the performance schedule and the return ratio (default: the expert's recorded
    score; of an ensemble, the best teacher's)."""
    seed: int = 0
    n_eval_episodes: int | None = None
    """Episodes per evaluation (default: the env preset's)."""
    eval_every_steps: int = 0
    """Env steps between evaluations for the learning curve, on validation episodes (0: only before
    and after training); the best of them is kept as ``best_model.zip``."""
    out_dir: str | None = None
    overwrite: bool = False
    progress_bar: bool = True
    device: str = "cpu"
    """Torch device of the student's RL training and the teacher's labels: cpu | cuda | cuda:N | auto (``--device``)."""
    resume: bool = False
    """Continue the stopped run in ``out_dir`` from its last checkpoint (same options)."""
    checkpoint_every_s: float = 30.0
    """Seconds between checkpoints, taken when a rollout starts (0: at every rollout)."""


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Build the student, train it with reward + lambda * distillation, evaluate it against the
    teacher on the same episodes; write the run folder. Returns the summary (``summary.json``;
    with ``--resume`` of a finished run: the summary it wrote)."""
    from policykd.learn.kickstart import check_algo_fits

    started = time.perf_counter()
    _check_options(config)
    teachers, merge = resolve_ensemble(config)
    teacher = teachers[0]
    algo = config.algo or teacher.algo
    check_algo_fits(algo, teacher.action_space, teacher.kind)
    setup = plan_model(config, teacher, algo)
    state = check_run_folder(config, RESUME_MAY_DIFFER)
    finished = finished_summary(config.out_dir, state, SUMMARY_FILE)
    if finished is not None:  # resumed a finished run: nothing to do
        return finished
    n_eval = config.n_eval_episodes or int(load_preset(teacher.recipe.env_id).get("n_eval_episodes", 10))
    eval_seed = config.seed + EVAL_SEED_OFFSET
    teacher_stats = [evaluate_teacher(t, n_eval, eval_seed) for t in teachers]
    out_dir = claim_run_folder(config.out_dir, _default_folder(config, teacher.recipe.env_id, algo))
    resume = RESUME_MAY_DIFFER if config.resume else None
    with run_folder(out_dir, dataclasses.asdict(config), config.overwrite, resume):
        model = build_model(config, teachers, algo, setup, out_dir / TB_DIR, merge)
        validation_seed = config.seed + VALIDATION_SEED_OFFSET
        curve = EvalCurve(teacher.recipe, n_eval, validation_seed, config.eval_every_steps)
        dict_space = getattr(teacher, "dict_space", None)
        save = functools.partial(save_zip, dict_space=dict_space)  # best-<steps>.zip as model.zip is written
        run = FinetuneRun(out_dir, curve, config.checkpoint_every_s, config.seed, save_best=save)
        _train(config, model, teacher, run, out_dir)
        run.finish(model)
        student_stats = evaluate_policy(SB3Actor(model), teacher.recipe, n_eval, seed=eval_seed)
        _save_student(model, out_dir, dict_space)
        summary = _summary(config, teachers, algo, setup, student_stats, teacher_stats, curve.points)
        summary["best"] = _save_best(run, model, student_stats, teacher.recipe, eval_seed, out_dir)
        summary["validation_seed"] = validation_seed
        summary["value_init"] = run.extra["value_init"]
        summary.update(out_dir=str(out_dir), wall_time_s=time.perf_counter() - started)
        write_json_atomic(out_dir / SUMMARY_FILE, summary)
    remove_checkpoints(out_dir)  # the run is done: nothing to resume
    return summary


def resolve_ensemble(config: FinetuneConfig) -> tuple[list[Any], Any]:
    """The teachers (several: one env and its spaces, checked as ``policykd distill`` checks an
    ensemble) and the merge of their targets (``single_teacher`` for one)."""
    named = CollectConfig(**{name: getattr(config, name) for name in TEACHER_FIELDS})
    teachers = resolve_teachers(named)
    return teachers, make_run_merge(named, len(teachers))


def _train(config: FinetuneConfig, model: Any, teacher: Any, run: FinetuneRun, out_dir: Path) -> None:
    """Restore the checkpoint a resumed run left (else initialise the value head), then learn the
    remaining env steps; a stop (SIGINT / SIGTERM) ends in one line that says how to resume."""
    checkpoint = run.restore(model) if config.resume else None
    if checkpoint is None:  # what a run stopped before its first checkpoint logged is dropped
        shutil.rmtree(out_dir / TB_DIR, ignore_errors=True)
        run.extra["value_init"] = init_value(model, teacher, config.value_init, config.seed)
    else:
        run.extra["value_init"] = checkpoint.get("value_init")
    try:
        run.learn(model, config.n_timesteps)
    except KeyboardInterrupt:
        run.stopped = True
    if run.stopped:
        steps = run.checkpoint_steps
        if run.stop_requested and steps is not None:  # stopped where the checkpoint was taken
            where = f"at env step {steps:,} of {config.n_timesteps:,} (checkpoint saved)"
        else:
            last = "no checkpoint yet" if steps is None else f"last checkpoint at step {steps:,}"
            where = f"at env step {int(model.num_timesteps):,} of {config.n_timesteps:,} ({last})"
        again = "the same command plus --resume" + ("" if config.out_dir else f" --out {out_dir}")
        raise KeyboardInterrupt(f"interrupted {where}; resume with {again}")


def _save_student(model: Any, out_dir: Path, dict_space: Any = None) -> None:
    """``model.zip`` (:func:`save_zip`) and, for a VecNormalize'd env, ``vecnormalize.json``."""
    from policykd.data.vec_normalize import vec_normalize_state

    save_zip(model, out_dir / MODEL_FILE, dict_space)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        write_json_atomic(out_dir / VEC_NORMALIZE_FILE, vec_normalize_state(vec_normalize))


def save_zip(model: Any, path: Path, dict_space: Any = None) -> None:
    """SB3's zip of ``model``, written atomically; for a Dict env ``dict_space``, a MultiInputPolicy
    (:func:`saved_as_multi_input`)."""
    with atomic_path(path, ".zip") as tmp, saved_as_multi_input(model, dict_space):
        model.save(tmp)


def _save_best(run: FinetuneRun, model: Any, final: ReturnStats, recipe: Any, eval_seed: int, out_dir: Path):
    """``best_model.zip`` (and ``best_vecnormalize.json``): the run's best validation evaluation,
    scored on the held-out episodes ``final`` (the last weights') was measured on. Call after the
    final model is saved: ``model`` is left holding the best weights."""
    assert run.best is not None, "the learning curve has at least its first and last points"
    stats = final
    if run.best["steps"] != int(model.num_timesteps):
        run.load_best(model)
        stats = evaluate_policy(SB3Actor(model), recipe, final.n_episodes, seed=eval_seed)
    run.hand_back_best(out_dir / BEST_MODEL_FILE, out_dir / BEST_VEC_NORMALIZE_FILE)
    return {
        "steps": run.best["steps"],
        "validation_return": run.best["validation_return"],
        "student_return": stats.to_json(),
        "model": BEST_MODEL_FILE,
    }


# the attributes saved_as_multi_input changes while SB3 saves a model of a Dict env's rows
SAVED_AS_DICT = (
    "observation_space",
    "policy_class",
    "rollout_buffer_class",
    "replay_buffer_class",
    "_last_obs",
    "_last_original_obs",
)


@contextlib.contextmanager
def saved_as_multi_input(model: Any, dict_space: Any) -> Iterator[None]:
    """While it lasts, ``model`` (the MlpPolicy of a Dict env's flat rows, :func:`dict_rows_policy`)
    is what SB3 saves as the MultiInputPolicy of ``dict_space``: its observation space, policy class
    and buffer class (SB3's Dict ones), and its last observations as dicts. The state dict is the
    same (a vector key's extractor is a flatten, with no weights), so ``PPO.load`` etc. rebuild it
    and ``predict`` takes the env's dicts. Nothing changes when ``dict_space`` is None."""
    if dict_space is None:
        yield
        return
    from stable_baselines3.common.buffers import DictReplayBuffer, DictRolloutBuffer, ReplayBuffer, RolloutBuffer

    from policykd.data.envs import unflatten_dict_obs

    dict_buffers = {RolloutBuffer: DictRolloutBuffer, ReplayBuffer: DictReplayBuffer}
    kept = {name: vars(model)[name] for name in SAVED_AS_DICT if name in vars(model)}
    saved = {
        "observation_space": dict_space,
        "policy_class": type(model).policy_aliases["MultiInputPolicy"],
        **{k: dict_buffers.get(v, v) for k, v in kept.items() if k.endswith("buffer_class")},
        **{k: unflatten_dict_obs(dict_space, v) for k, v in kept.items() if k.endswith("obs") and v is not None},
    }
    try:
        vars(model).update(saved)
        yield
    finally:
        vars(model).update(kept)


def init_value(model: Any, teacher: Any, n_observations: int, seed: int) -> dict[str, float] | None:
    """Distil the teacher's value into the student's value head on ``n_observations`` states the
    student visits (kickstart_start.distill_value); None when ``n_observations`` is 0."""
    if not n_observations:
        return None
    from policykd.data.envs import make_vec_env
    from policykd.learn.kickstart_start import distill_value

    venv = make_vec_env(teacher.recipe, 8, seed + 1)  # not the training envs' seeds
    actor = SB3Actor(model)  # reads the observations as the student's env normalises them
    observations, obs = [], venv.reset()
    while len(observations) * venv.num_envs < n_observations:
        observations.append(obs)
        obs = venv.step(actor.act(obs, deterministic=False))[0]
    venv.close()
    raw = np.concatenate(observations)[:n_observations]
    read = raw if actor.vec_normalize is None else actor.vec_normalize.normalize_obs(raw)
    before, after = distill_value(model, teacher, raw, student_observations=read, seed=seed)
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
    if config.exploration_initial_eps is not None:
        check_probability("exploration_initial_eps", config.exploration_initial_eps)
    if config.net_fraction != 1.0 and config.start != "scratch":
        raise PolicyKDError(f"--net-fraction sizes a student started from scratch, not from {config.start}; drop it")
    check_out_dir(config.out_dir)
    check_resume_options(config.resume, config.overwrite, config.out_dir, config.checkpoint_every_s)


@dataclasses.dataclass
class ModelPlan:
    """What the SB3 model is built with, resolved before the run folder is written."""

    policy: str
    n_envs: int
    kwargs: dict[str, Any]  # the algorithm's keyword arguments (rl-zoo's, policy_kwargs set for the start)
    hyperparams_source: str
    not_applied: dict[str, Any]  # rl-zoo keys this job does not apply (env_wrapper, ...)
    student: Any = None  # the distilled student to copy in (start from a run folder)
    student_loss: str | None = None
    student_center_q: bool | None = None  # whether its Q-values were centred (LossOptions.center_q); None: not recorded
    normalize: dict[str, Any] | None = None  # VecNormalize's kwargs for the student's env; None: raw env
    exploration: dict[str, Any] | None = None  # a Q-learner's epsilon-greedy schedule (exploration_schedule)


def plan_model(config: FinetuneConfig, teacher: Any, algo: str) -> ModelPlan:
    """rl-zoo's hyperparameters for ``algo`` on the teacher's env, with ``policy_kwargs`` for the start point."""
    from policykd.learn.kickstart_start import (
        check_q_value_student,
        scaled_net_arch,
        student_policy_kwargs,
        teacher_policy_kwargs,
    )
    from policykd.zoo.hyperparams import algorithm_kwargs, normalize_kwargs, zoo_hyperparams

    folder = teacher.source if teacher.algo == algo and Path(teacher.source).is_dir() else None
    raw, source = zoo_hyperparams(algo, teacher.recipe.env_id, folder)
    kwargs, zoo = algorithm_kwargs(raw)
    _action_noise(kwargs, zoo, teacher.action_space)
    plan = ModelPlan(str(zoo.pop("policy", "MlpPolicy")), int(zoo.pop("n_envs", 1)), kwargs, source, zoo)
    zoo.pop("n_timesteps", None)
    wanted = normalize_kwargs(zoo.pop("normalize", False), kwargs.get("gamma"))
    plan.normalize = vec_normalize_kwargs(config.start, teacher.normalizer, wanted, zoo)
    plan.exploration = exploration_schedule(config, algo, kwargs, zoo)
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
        plan.student_center_q = (opened.run_config or {}).get("center_q")
        kwargs["policy_kwargs"] = student_policy_kwargs(opened.student, algo, base)
        check_q_value_student(algo, plan.student_loss, plan.student_center_q)  # before the run folder is written
    dict_rows_policy(plan, teacher)
    return plan


def dict_rows_policy(plan: ModelPlan, teacher: Any) -> None:
    """A dict-observation teacher's env gives the student flat rows (``data.envs.flat_dict_space``):
    the model is the MlpPolicy of those rows where the hyperparameters name a MultiInputPolicy (and
    without the teacher's CombinedExtractor, from ``--start teacher``). It computes the same: SB3's
    CombinedExtractor flattens each vector key and concatenates them, with no weights. model.zip is
    written back as the MultiInputPolicy of the env's Dict (:func:`saved_as_multi_input`)."""
    from stable_baselines3.common.torch_layers import CombinedExtractor

    if getattr(teacher, "dict_space", None) is None:
        return
    if plan.policy == "MultiInputPolicy":
        plan.policy = "MlpPolicy"
    policy_kwargs = plan.kwargs.get("policy_kwargs") or {}
    if policy_kwargs.get("features_extractor_class") is CombinedExtractor:
        plan.kwargs["policy_kwargs"] = {
            k: v for k, v in policy_kwargs.items() if not k.startswith("features_extractor")
        }


def vec_normalize_kwargs(
    start: str, normalizer: Any, wanted: dict[str, Any] | None, not_applied: dict[str, Any]
) -> dict[str, Any] | None:
    """VecNormalize's keyword arguments for the student's env (None: raw observations and rewards).
    Observations are normalised when the teacher's are (``normalizer``, whose statistics and
    ``clip_obs`` the env starts from), or when rl-zoo's ``normalize`` (``wanted``) says so and the
    student starts from scratch (a start point of raw observations keeps them: noted in
    ``not_applied``); rewards as ``wanted`` says (rl-zoo's default: normalised)."""
    kwargs = dict(wanted or {})
    norm_obs = normalizer is not None
    if wanted is not None and kwargs.get("norm_obs", True) and not norm_obs:
        if start == "scratch":
            norm_obs = True
        else:
            not_applied["normalize"] = "norm_obs (the start point reads raw observations)"
    norm_reward = wanted is not None and bool(kwargs.get("norm_reward", True))
    if not (norm_obs or norm_reward):
        return None
    kwargs.update(norm_obs=norm_obs, norm_reward=norm_reward)
    if normalizer is not None:
        kwargs.update(clip_obs=float(normalizer.clip), epsilon=float(normalizer.epsilon))
    return kwargs


def exploration_schedule(
    config: FinetuneConfig, algo: str, kwargs: dict[str, Any], not_applied: dict[str, Any]
) -> dict[str, Any] | None:
    """A DQN / QR-DQN student's epsilon-greedy schedule, set in ``kwargs``: it starts at
    ``config.exploration_initial_eps`` when given, else from scratch at the hyperparameters'
    (SB3: 1.0), from a pre-trained start (teacher, distilled student) at their final epsilon: rl-zoo's
    schedules are for random weights, and a pre-trained Q-network acting at random for its first
    ``exploration_fraction`` of the steps fills the replay buffer with a random policy's transitions
    and loses what it was taught. An rl-zoo value so replaced goes into ``not_applied`` (the CLI
    prints it). None for other algorithms."""
    if algo not in ("dqn", "qrdqn"):
        return None
    from policykd.learn.kickstart import KICKSTART_CLASSES
    from policykd.zoo.hyperparams import sb3_default

    def value(name: str) -> float:
        return float(kwargs.get(name, sb3_default(KICKSTART_CLASSES[algo], name)))

    final, given = value("exploration_final_eps"), value("exploration_initial_eps")
    if config.exploration_initial_eps is not None:
        initial, why = float(config.exploration_initial_eps), "exploration_initial_eps given"
    elif config.start == "scratch":
        initial, why = given, "the hyperparameters' (random initial weights)"
    else:
        initial, why = final, "the final epsilon: a pre-trained start keeps its policy"
    if initial != given:
        not_applied["exploration_initial_eps"] = f"{given:g}, replaced by {initial:g} ({why})"
    kwargs["exploration_initial_eps"] = initial
    return {
        "initial_eps": initial,
        "final_eps": final,
        "fraction": value("exploration_fraction"),
        "initial_eps_from": why,
    }


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


def build_model(
    config: FinetuneConfig, teachers: Sequence[Any], algo: str, plan: ModelPlan, tb_dir: Path | None, merge: Any = None
) -> Any:
    """The Kickstart model on the (first) teacher's env recipe, with the start point's weights copied
    in; the distillation term merges the teachers' targets by ``merge`` (None: one teacher)."""
    from policykd.data.envs import make_vec_env
    from policykd.data.vec_normalize import wrap_vec_normalize
    from policykd.learn.kickstart import KICKSTART_CLASSES
    from policykd.learn.kickstart_start import copy_student_weights, copy_teacher_weights

    teacher = teachers[0]
    env = make_vec_env(teacher.recipe, plan.n_envs, config.seed)
    if plan.normalize is not None:
        env = wrap_vec_normalize(env, plan.normalize, teacher.normalizer)
    try:
        model = KICKSTART_CLASSES[algo](
            plan.policy,
            env,
            teacher=list(teachers),
            merge=merge,
            schedule=config.schedule,
            loss=config.loss,
            loss_options=loss_options(config),
            entropy_coef=config.entropy_coef,
            teacher_return=config.teacher_return,
            warmup_with_policy=config.start != "scratch",  # a pre-trained start's warm-up shows its policy
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
        env_normalizer = teacher.normalizer if (plan.normalize or {}).get("norm_obs") else None
        copy_student_weights(
            model, plan.student, algo, plan.student_loss, env_normalizer=env_normalizer, center_q=plan.student_center_q
        )
    return model


def loss_options(config: FinetuneConfig) -> dict[str, Any]:
    """The distillation term's options, as the Kickstart classes take them (and the summary records)."""
    options = {"temperature": config.temperature, **config.loss_kwargs()}
    if config.temperature_on is not None:
        options["temperature_on"] = config.temperature_on
    return options


def _summary(
    config: FinetuneConfig,
    teachers: Sequence[Any],
    algo: str,
    plan: ModelPlan,
    student: ReturnStats,
    teacher_stats: Sequence[ReturnStats],
    curve: list[list[float]],
) -> dict[str, Any]:
    """``teacher_return``: the best teacher's on the evaluation episodes (the student's are the same
    episodes); an ensemble's every teacher is in ``teachers``."""
    from policykd.learn.kickstart import default_loss

    teacher, best = teachers[0], max(teacher_stats, key=lambda stats: stats.mean)
    summary = {
        "env_id": teacher.recipe.env_id,
        "teacher": teacher.source,
        "teacher_algo": teacher.algo,
        "algo": algo,
        "start": config.start,
        "schedule": config.schedule,
        "loss": config.loss or default_loss(algo, teacher.kind),
        "loss_options": loss_options(config),
        "entropy_coef": config.entropy_coef,
        "n_timesteps": config.n_timesteps,
        "n_envs": plan.n_envs,
        "hyperparams_source": plan.hyperparams_source,
        "hyperparams_not_applied": {k: str(v) for k, v in plan.not_applied.items()},
        "vec_normalize": plan.normalize,
        "exploration": plan.exploration,
        "warmup_with_policy": config.start != "scratch",
        "student_return": student.to_json(),
        "teacher_return": best.to_json(),
        "return_ratio": student.mean / best.mean if best.mean else None,
        "curve": curve,
        "seed": config.seed,
    }
    if len(teachers) > 1:
        summary["merge"] = config.merge or "mean-probs"
        summary["teacher_weights"] = config.teacher_weights
        summary["teachers"] = [
            {"source": t.source, "algo": t.algo, "kind": t.kind, "return": stats.to_json()}
            for t, stats in zip(teachers, teacher_stats, strict=True)
        ]
    return summary


def _default_folder(config: FinetuneConfig, env_id: str, algo: str) -> Path:
    start = config.start if config.start in ("scratch", "teacher") else "student"
    schedule = config.schedule.replace(":", "")
    return Path("runs") / env_id.replace("/", "-") / f"finetune-{algo}-{start}-{schedule}-seed{config.seed}"
