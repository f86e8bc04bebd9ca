"""Every option of the ``policykd`` command line, declared once; each subcommand lists the ones it takes.

Options default to "not given" (argparse.SUPPRESS): a job's config dataclass supplies the default,
so one declaration serves every command, and a ``--config`` YAML file fills what the command line
leaves out (cli.py turns its values into the parser's defaults). ``dest`` is the config field an
option sets. Every command takes the COMMON options.

Nothing heavy is imported here (nor in cli.py): ``policykd --help`` loads no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

THREADS_HELP = "torch threads (default 1: small MLPs run fastest on one; raise it for CNNs)"
DEVICE_HELP = (
    "torch device of teacher labelling, student training and evaluation: cpu | cuda | cuda:N | auto (default cpu: "
    "the small MLPs here run faster on one CPU thread than a GPU's copies and kernel launches allow; auto: cuda for "
    "image observations, such as Atari, when torch sees a GPU, else cpu)"
)

# name -> (flags, argparse keyword arguments). Help says where the default comes from when a
# config dataclass field is None ("preset": the env's envs/<EnvId>.yml).
OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    # what to distil
    "teacher": (("--teacher",), dict(dest="teachers", action="append", help="rl-zoo folder, SB3 .zip or hub id (default: the env preset's expert); repeat it for an ensemble of teachers on one task")),
    "env": (("--env",), dict(dest="env_id", help="env id (default: the teacher's, else CartPole-v1); evaluate / export: the task of a multi-task student")),
    "merge": (("--merge",), dict(help="how an ensemble's targets combine: mean-probs | mean-logits | entropy-weighted | most-confident (default mean-probs)")),
    "teacher_weights": (("--teacher-weights",), dict(type=float, nargs="+", help="one weight per --teacher, for the merge")),
    "teacher_drive": (("--teacher-drive",), dict(help="who acts among several teachers: merged | round-robin (per episode) | random | first (default merged)")),
    "task": (("--task",), dict(dest="tasks", action="append", help="ENV=TEACHER (or ENV for its preset expert); repeat for one student of several tasks")),
    "task_weights": (("--task-weights",), dict(type=float, nargs="+", help="share of each batch per --task (default equal)")),
    "buffer": (("--buffer",), dict(help="train from this saved buffer instead of collecting")),
    "zoo": (("--zoo", "--zoo-dir"), dict(dest="zoo_dir", metavar="DIR", help="expert zoo folder (<algo>/<EnvId>_<n>, such as a policykd clone's agents/) that the env presets' experts are read from (default: $POLICYKD_ZOO, else the agents/ of the policykd checkout you run in)")),
    "trust_pickles": (("--trust-pickles",), dict(action="store_const", const=True, help="read the teacher's pickles (SB3 zip, vecnormalize.pkl) and env wrappers as SB3 does, for files you trust: they may run code (default: only what SB3 experts need is read)")),
    "preset": (("--preset",), dict(help="auto: the env's preset (envs/<EnvId>.yml) where it has one; none: every default derived from the teacher (default auto)")),
    "no_teacher_check": (("--no-teacher-check",), dict(dest="teacher_check", action="store_const", const=False, help="use a teacher even if it plays no better than a uniformly random policy, or far below its recorded score (refused by default: its env recipe is then almost surely wrong)")),
    # collection
    "n_transitions": (("--n-transitions",), dict(type=int, help="labelled transitions to collect (default: preset)")),
    "n_envs": (("--n-envs",), dict(type=int, help="vectorised envs while collecting (default: preset)")),
    "epsilon": (("--epsilon",), dict(type=float, help="epsilon-greedy exploration for discrete actions (default: preset)")),
    "action_noise": (("--action-noise",), dict(type=float, help="Gaussian action noise, fraction of the half action range (default: preset)")),
    "seed": (("--seed",), dict(type=int, help="seed of collection, initial weights and evaluation (default 0)")),
    "device": (("--device",), dict(help=DEVICE_HELP)),
    "backend": (("--backend",), dict(choices=("local", "ray"), help="where the work runs: local (this process, default) or ray (collect, distill: one Ray task per --workers; sweep, compare-drivers: one Ray task per cell; pip install 'policykd[ray]')")),
    "workers": (("--workers",), dict(type=int, help="collection workers, each with its own --n-envs envs and teacher copies, sharing --n-transitions; worker w is the collection --seed S+w*n_envs makes, so local and ray give the same buffer (default 1); compare-drivers: each online round's collection split so, on Ray actors with --backend ray (the runs then go one after another here)")),
    "vec_env": (("--vec-env",), dict(choices=("dummy", "subproc"), help="how collection steps its envs: dummy (in this process, default: fastest on few cores and light envs) or subproc (two env groups in subprocesses; one steps while the other's observations are labelled; pays off with slow envs and spare cores; a different buffer from dummy's, the same for either group runner)")),
    "ray_address": (("--ray-address",), dict(metavar="ADDRESS", help="join this running Ray cluster (ray://host:10001, or auto) instead of starting a local Ray; with --backend ray")),
    # the loss
    "loss": (("--loss",), dict(help="kl | nll | mse (default kl; mse for a deterministic TD3/DDPG teacher)")),
    "temperature": (("--temperature",), dict(type=float, help="tau: softmax(x/tau) or std*tau (default 1; kl on a DQN / QR-DQN teacher: from its Q-values' median gap)")),
    "temperature_on": (("--temperature-on",), dict(help="teacher | both (default teacher)")),
    "kl_direction": (("--kl-direction",), dict(help="forward = KL(teacher||student) | reverse (default forward)")),
    "tau2_scaling": (("--tau2-scaling",), dict(action="store_const", const=True, help="multiply the KL by tau^2 (Hinton)")),
    "no_q_center": (("--no-q-center",), dict(dest="center_q", action="store_const", const=False, help="mse on raw Q-values instead of Q minus its mean over actions")),
    "nll_min_std": (("--nll-min-std",), dict(type=float, help="floor on the student's std in continuous nll (default 0.1; 0 disables)")),
    "hard_label_weight": (("--hard-label-weight",), dict(type=float, metavar="LAMBDA", help="kl + LAMBDA x hard-label term: cross-entropy to the teacher's argmax action (Gaussian teachers: squared error to its mean) (default 0: off)")),
    "label_smoothing": (("--label-smoothing",), dict(type=float, metavar="EPS", help="kl on discrete teachers: mix the target with uniform, (1-EPS) p + EPS/|A|, EPS in [0, 1) (default 0: off)")),
    # the student and its training
    "hidden": (("--hidden",), dict(dest="hidden_sizes", type=int, nargs="+", help="student MLP hidden sizes (default: preset)")),
    "cnn_width": (("--cnn-width",), dict(type=float, help="NatureCNN width multiplier for image observations (default: preset)")),
    "student_fraction": (("--student-fraction",), dict(type=float, help="student size as a share of the teacher's acting parameters (default 0.25 where no preset applies)")),
    "input_width": (("--input-width",), dict(type=int, help="width of each vector task's own input layer, with --task (default 64)")),
    "n_updates": (("--n-updates",), dict(type=int, help="gradient steps per student (default: preset)")),
    "batch_size": (("--batch-size",), dict(type=int, help="transitions per gradient step (default: preset)")),
    "lr": (("--lr",), dict(dest="learning_rate", type=float, help="Adam step size (default: preset)")),
    "eval_episodes": (("--eval-episodes",), dict(dest="n_eval_episodes", type=int, help="episodes per evaluation (default: preset)")),
    "eval_every": (("--eval-every",), dict(type=int, help="updates between evaluations (0: only at the end; default: a quarter of --n-updates, so the curve has 4 points)")),
    "out_dir": (("--out",), dict(dest="out_dir", help="output folder (default: a new folder under runs/)")),
    "overwrite": (("--overwrite",), dict(action="store_const", const=True, help="empty --out and run again when it holds an earlier run (refused otherwise)")),
    # every command (COMMON)
    "config": (("--config",), dict(metavar="FILE.yml", help="YAML file with any of this command's options as keys (n-updates: 500, teacher: ...); the command line wins; a run folder's config.yml reruns that run")),
    "no_progress": (("--no-progress",), dict(dest="progress_bar", action="store_const", const=False, help="no progress bars (they show on a terminal only, never in a pipe or a file)")),
    "quiet": (("-q", "--quiet"), dict(action="store_const", const=True, help="print the result and errors only: no progress bars, notes or warnings")),
    "verbose": (("-v", "--verbose"), dict(action="store_const", const=True, help="also print each step as it ends, with its duration (unless --no-progress), and every library warning")),
    # videos and export
    "video": (("--video",), dict(action="store_const", const=True, help="after training, record the teacher and the student on the first evaluation episodes as mp4 into <run>/videos (needs moviepy)")),
    "video_dir": (("--video",), dict(dest="video_dir", metavar="DIR", help="also record the first episode(s) as mp4 into DIR, on the same seeds (needs moviepy)")),
    "video_episodes": (("--video-episodes",), dict(type=int, help="episodes recorded per policy with --video (default 1)")),
    "gif": (("--gif",), dict(action="store_const", const=True, help="with --video, also write each episode as an animated GIF, 320 px wide (e.g. for a README; slow for long episodes)")),
    "export_format": (("--format",), dict(dest="export_format", choices=("onnx", "sb3", "hub"), help="onnx: one ONNX file (default) | sb3: a zip that PPO / DQN / SAC / TD3.load reads | hub: a Hugging Face hub folder (model card, zip, config, video)")),
    "resume": (("--resume",), dict(action="store_const", const=True, help="continue the stopped run in --out (same options) from its last checkpoint (distill: also its saved buffer and evaluations); a finished run is left as it is")),
    "checkpoint_every": (("--checkpoint-every",), dict(dest="checkpoint_every_s", type=float, metavar="SECONDS", help="seconds between training checkpoints (default 30; also around evaluations and on Ctrl-C / SIGTERM)")),
    # experiments (sweep, compare-drivers)
    "seeds": (("--seeds",), dict(dest="n_seeds", type=int, help="students per setting, for the CIs (default 3)")),
    "temperatures": (("--temperatures",), dict(type=float, nargs="*", help="taus to sweep (default 0.01 0.1 0.5 1 2 5)")),
    "bins": (("--bins",), dict(dest="n_bins", type=int, help="bins per dimension for state-visitation entropy (default 8)")),
    "drivers": (("--drivers",), dict(nargs="+", help="any of teacher student dagger (default: all three)")),
    "dagger_schedule": (("--dagger-schedule",), dict(help="beta schedule of the dagger driver (default linear:<rounds/2>)")),
    "rounds": (("--rounds",), dict(dest="n_rounds", type=int, help="collection + training rounds (default 10)")),
    "round_transitions": (("--round-transitions",), dict(dest="n_transitions_per_round", type=int, help="teacher labels per round (default 5000)")),
    "round_updates": (("--round-updates",), dict(dest="n_updates_per_round", type=int, help="updates per round (default 500)")),
    "capacity": (("--capacity",), dict(type=int, help="ring buffer size (default: keep every label)")),
    "stochastic_drivers": (("--stochastic-drivers",), dict(dest="deterministic_drivers", action="store_const", const=False, help="drivers sample their actions instead of acting greedily")),
    # RL fine-tuning with a distillation term (finetune)
    "algo": (("--algo",), dict(help="the student's SB3 algorithm: ppo | a2c | dqn | qrdqn | sac | td3 (default: the teacher's)")),
    "start": (("--start",), dict(help="scratch (default) | teacher (its weights) | a run folder of `policykd distill` (its student)")),
    "net_fraction": (("--net-fraction",), dict(type=float, help="from scratch: hidden sizes as a fraction of the teacher's (default 1)")),
    "lambda_schedule": (("--schedule",), dict(dest="schedule", help="weight of the distillation term over env steps: constant:L | linear:N | exponential:H | performance (default constant:1; 0 is plain RL)")),
    "entropy_coef": (("--entropy-coef",), dict(type=float, help="entropy bonus on the student, added with the distillation term (default 0)")),
    "timesteps": (("--timesteps",), dict(dest="n_timesteps", type=int, help="env steps of RL training (default 50000)")),
    "teacher_return": (("--teacher-return",), dict(type=float, help="the teacher's return for the performance schedule (default: its recorded score)")),
    "value_init": (("--value-init",), dict(type=int, metavar="N", help="PPO / A2C: fit the student's value head to the teacher's value on N states it visits, before RL (default 0: no)")),
    "exploration_initial_eps": (("--exploration-initial-eps",), dict(type=float, help="DQN / QR-DQN: epsilon at the first step (default: rl-zoo's final epsilon when starting from the teacher or a distilled student, its initial one from scratch)")),
    "eval_every_steps": (("--eval-every-steps",), dict(type=int, help="env steps between evaluations of the learning curve (default 0: before and after training)")),
    "student_sampling": (("--student-sampling",), dict(choices=("teacher", "distribution"), help="how the student acts when evaluated stochastically (Atari): teacher = as its teacher does (a DQN / QR-DQN teacher's student: epsilon-greedy at the teacher's exploration rate) | distribution = sample its softmax (default teacher)")),
}  # fmt: skip

COMMON = ("config", "no_progress", "quiet", "verbose")
COLLECT = ("teacher", "zoo", "env", "merge", "teacher_weights", "teacher_drive", "n_transitions", "n_envs", "epsilon",
            "action_noise", "seed", "no_teacher_check", "preset", "device", "backend", "workers", "ray_address", "vec_env")  # fmt: skip
LOSS = ("loss", "temperature", "temperature_on", "kl_direction", "tau2_scaling", "no_q_center", "nll_min_std",
        "hard_label_weight", "label_smoothing")  # fmt: skip
# the student, its training, and the videos recorded after it (distill)
TRAINING = ("hidden", "cnn_width", "student_fraction", "n_updates", "batch_size", "lr", "eval_episodes", "eval_every", "out_dir",
            "overwrite", "resume", "checkpoint_every", "video", "video_episodes", "student_sampling")  # fmt: skip
EXPERIMENT = ("teacher", "zoo", "env", "seeds", "n_envs", "hidden", "batch_size", "lr", "eval_episodes", "seed",
              "out_dir", "no_teacher_check", "device")  # fmt: skip
SWEEP = (*EXPERIMENT, "trust_pickles", "temperatures", "n_transitions", "epsilon", "action_noise", "temperature_on",
         "kl_direction", "n_updates", "bins", "backend", "ray_address")  # fmt: skip
DRIVERS = (*EXPERIMENT, "trust_pickles", "drivers", "dagger_schedule", "rounds", "round_transitions", "round_updates",
           "capacity", "loss", "temperature", "stochastic_drivers", "backend", "ray_address", "workers")  # fmt: skip
FINETUNE = ("teacher", "merge", "teacher_weights", "zoo", "env", "trust_pickles", "algo", "start", "net_fraction", "lambda_schedule", "entropy_coef",
            "timesteps", "teacher_return", "value_init", "exploration_initial_eps", *LOSS, "seed", "eval_episodes", "eval_every_steps", "out_dir", "overwrite", "device",
            "resume", "checkpoint_every")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Command:
    help: str
    options: tuple[str, ...] = ()
    epilog: str | None = None
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Values for options not given, where no config dataclass supplies them."""
    config: str | None = None
    """``module:Class`` of the job's config dataclass (imported only when the command runs)."""


def add_options(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Add each named option once (a name listed twice is added once), defaulting to "not given"."""
    for name in dict.fromkeys(names):
        flags, kwargs = OPTIONS[name]
        parser.add_argument(*flags, default=argparse.SUPPRESS, **kwargs)


def add_command(sub: Any, name: str, command: Command) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name, help=command.help, epilog=command.epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(parser, (*command.options, *COMMON))
    parser.set_defaults(quiet=False, verbose=False, **command.defaults)
    return parser


def option_keys(flags: tuple[str, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
    """``(name, dest)`` of an option: its long flag as a config-file key (``n_updates`` for
    ``--n-updates``) and the attribute it sets."""
    long = next((flag for flag in flags if flag.startswith("--")), flags[0])
    name = long.lstrip("-").replace("-", "_")
    return name, kwargs.get("dest", name)


def config_aliases(options: list[tuple[tuple[str, ...], dict[str, Any]]]) -> dict[str, str]:
    """The keys a ``--config`` file may use for ``options`` ((flags, kwargs) pairs): each option's
    name (``n_updates``, ``seeds``) and its dest (``n_seeds``), mapped to the dest. A config
    dataclass's fields are keys too (jobs/experiment.read_config_file)."""
    aliases = {}
    for flags, kwargs in options:
        name, dest = option_keys(flags, kwargs)
        aliases.update({name: dest, dest: dest})
    return aliases


def config_values(args: argparse.Namespace, config_class: Any) -> dict[str, Any]:
    """The given options that ``config_class`` (a dataclass) takes; lists become tuples. A single
    ``--teacher`` fills a config that takes one teacher (``teacher`` but no ``teachers``)."""
    values = dict(vars(args))
    fields = {f.name for f in dataclasses.fields(config_class)}
    if "teachers" in values and "teachers" not in fields and "teacher" in fields:
        teachers = values.pop("teachers")
        if len(teachers) > 1:
            from policykd.errors import PolicyKDError

            raise PolicyKDError(f"this command takes one --teacher, got {len(teachers)}; run it once per teacher")
        values["teacher"] = teachers[0]
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}
