"""``policykd`` command line: parse, call the library, print. Nothing else lives here."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from policykd.cli_options import (
    COLLECT,
    COMMON,
    DRIVERS,
    FINETUNE,
    LOSS,
    OPTIONS,
    SWEEP,
    TRAINING,
    Command,
    config_aliases,
    config_values,
    option_keys,
)
from policykd.errors import PolicyKDError

DISTILL_EXAMPLES = """examples:
  policykd distill                                   # the shipped CartPole PPO expert, preset budgets
  policykd distill --env Pendulum-v1                 # the preset's default expert for that env
  policykd distill --teacher agents/dqn/CartPole-v1_1 --loss mse
  policykd distill --buffer runs/cartpole.npz --teacher agents/ppo/CartPole-v1_1 --temperature 0.5
"""


SWEEP_EXAMPLES = """examples:
  policykd sweep --teacher agents/ppo/CartPole-v1_1 --temperatures 0.01 0.1 0.5 1 2 5 --seeds 3
  policykd sweep --env Pendulum-v1 --temperatures 0.5 1 2 --n-updates 2000 --out runs/sweep-pendulum
  policykd sweep --config sweep.yml            # keys as the options: teacher, env, temperatures, seeds, ...

temperature: discrete teachers give softmax(logits / tau) (or softmax(Q / tau)); Gaussian teachers
(PPO on Box, SAC) keep their mean and have their standard deviation multiplied by tau.
"""
EXPORT_HELP = "write a student as one ONNX file, an SB3 zip or a hub folder; checked against the student"
EXPORT_EXAMPLES = """examples:
  policykd export runs/CartPole-v1/kl-tau1-seed0                  # policy.onnx in the run folder
  policykd export runs/CartPole-v1/kl-tau1-seed0 --format sb3     # ppo-CartPole-v1.zip: PPO.load plays it
  policykd export runs/CartPole-v1/kl-tau1-seed0 --format hub     # hub/: model card, zip, config, replay.mp4
  policykd export runs/multitask/CartPole+Acrobot-seed0 --env Acrobot-v1 --format sb3   # one task

SB3 classes: PPO (discrete or Gaussian head), DQN (discrete head trained with --loss mse on Q-values),
SAC (squashed Gaussian), TD3 (deterministic). The student's input normalisation is folded into the
first layer: the zip plays on raw observations, without VecNormalize.
"""
FINETUNE_EXAMPLES = """examples:
  policykd finetune --teacher agents/ppo/LunarLander-v3_1 --schedule linear:100000 --timesteps 200000
  policykd finetune --teacher agents/dqn/LunarLander-v3_1 --start runs/dqn-student --schedule performance
  policykd finetune --teacher agents/ppo/CartPole-v1_1 --net-fraction 0.5 --schedule exponential:20000
  policykd finetune --teacher agents/ppo/CartPole-v1_1 --timesteps 200000 --out runs/ft --resume   (continue a stopped run)
  policykd finetune --teacher agents/ppo/LunarLander-v3_1 --teacher agents/ppo/LunarLander-v3_2 --merge mean-logits

loss = SB3's loss + lambda * distillation loss toward the teacher (--loss kl | nll | mse; a DQN / QR-DQN
student: QDagger's tau-KL) - entropy_coef * entropy; rl-zoo's hyperparameters for --algo on the env.
Several --teacher: the term's target merges theirs (--merge, --teacher-weights); the first teacher gives
the env, the hyperparameters and --start teacher's weights; the student is compared with the best one.
"""
COMPARE_EXAMPLES = """examples:
  policykd compare-drivers --teacher agents/ppo/LunarLander-v3_1 --seeds 3
  policykd compare-drivers --env CartPole-v1 --drivers student dagger --dagger-schedule exponential:0.5

drivers: teacher (beta = 1), student (beta = 0: on-policy, the teacher only labels), dagger (the teacher
acts with probability beta per step; schedules constant:B, linear:N, exponential:D).
"""


def _commands() -> dict[str, Command]:
    return {
        "collect": Command(
            "teacher-driven rollouts -> labelled buffer (.npz)",
            (*COLLECT, "trust_pickles", "overwrite"),
            defaults={"overwrite": False},
            config="policykd.jobs.config:CollectConfig",
        ),
        "distill": Command(
            "train a student (collecting first, or from --buffer); --task for several tasks",
            (*COLLECT, "trust_pickles", "buffer", "task", "task_weights", "input_width", *LOSS, *TRAINING),
            DISTILL_EXAMPLES,
            config="policykd.jobs.config:DistillConfig",
        ),
        "evaluate": Command(
            "play a teacher or a student and report its return",
            ("env", "seed", "trust_pickles", "video_dir", "video_episodes", "gif", "device"),
            defaults=dict(
                env_id=None, seed=None, trust_pickles=False, video_dir=None, video_episodes=1, gif=False, device="cpu"
            ),  # fmt: skip
        ),
        "sweep": Command(
            "distil one student per (temperature, seed) from one buffer; table + plots",
            SWEEP,
            SWEEP_EXAMPLES,
            config="policykd.jobs.sweep:SweepConfig",
        ),
        "compare-drivers": Command(
            "student return vs teacher labels for teacher / student / DAgger drivers",
            DRIVERS,
            COMPARE_EXAMPLES,
            config="policykd.jobs.drivers:DriversConfig",
        ),
        "export": Command(
            EXPORT_HELP, ("env", "export_format"), EXPORT_EXAMPLES, dict(env_id=None, export_format="onnx")
        ),
        "finetune": Command(
            "train a student with the env's reward plus a distillation term (SB3's PPO, A2C, DQN, QR-DQN, SAC, TD3)",
            FINETUNE,
            FINETUNE_EXAMPLES,
            config="policykd.jobs.finetune:FinetuneConfig",
        ),
        "zoo": Command("list the zoo's experts, their recorded scores, and the env presets", ("zoo",)),
        "train-expert": Command(
            "train (or resume) an rl-zoo expert into the zoo (agents/)", ("env", "seed", "zoo"), defaults={"seed": 0}
        ),
    }


# Arguments that belong to one command only: (flags, argparse keyword arguments).
COMMAND_ARGUMENTS: dict[str, list[tuple[tuple[str, ...], dict[str, Any]]]] = {
    "collect": [(("--out",), dict(required=True, help="buffer file to write (.npz)"))],  # required: checked after --config
    "evaluate": [
        (("source",), dict(help="run folder of `policykd distill` (or its student/), exported student (.onnx), rl-zoo folder, SB3 .zip or hub id")),
        (("--episodes",), dict(type=int, default=None, help="episodes to play (default: as distill evaluates: the run's for a student of a distill run, else the env preset's; 30 with --record)")),
        (("--episode-seed",), dict(type=int, default=None, help="seed env i of the evaluation with EPISODE_SEED + i exactly (default: --seed S's distill evaluation episodes, S + 10000 + i; 0 + i with --record, the zoo's scoring episodes)")),
        (("--stochastic",), dict(action="store_true", help="sample actions instead of acting greedily (a DQN / QR-DQN acts epsilon-greedily with its saved exploration rate, as SB3's predict does; default: as the env preset evaluates, greedily but on Atari)")),
        (("--deterministic",), dict(action="store_true", help="act greedily even where the env preset evaluates stochastically (Atari)")),
        (("--record",), dict(action="store_true", help="score on the zoo's protocol (30 episodes, env seeds from 0) and write it into the zoo folder's expert.json")),
    ],
    "export": [
        (("student",), dict(help="run folder of `policykd distill`, or its student/ folder")),
        (("--out",), dict(help="the file (or hub folder) to write (default: policy.onnx, <algo>-<env>.zip or hub/ in the folder given)")),
    ],
    "train-expert": [
        (("--algo",), dict(required=True)),
        (("--n-timesteps",), dict(type=int, help="default: rl-zoo's budget")),
        (("--checkpoint-every",), dict(type=int, default=50_000)),
        (("--run-id",), dict(type=int, default=1, help="run folder <algo>/<EnvId>_<run-id> (default 1)")),
        (("--device",), dict(default="cpu", help="torch device: cpu (default; fastest for MLPs), cuda or auto")),
        (("--selection-episodes",), dict(type=int, default=None, help="episodes that score the best and the final checkpoint before one ships (default 30, the zoo's protocol; 0: trust the in-training evaluations)")),
    ],
}  # fmt: skip


def _parser(file_values: dict[str, dict[str, Any]] | None = None) -> argparse.ArgumentParser:
    """The parser; ``file_values`` (command -> dest -> value, from its --config file) become that
    command's defaults, so the command line wins over the file and the file over the defaults.
    A required option is checked after the file is read (:func:`_check_required`), not here."""
    from policykd.cli_options import THREADS_HELP, add_command

    parser = _OneLineParser(prog="policykd", description="Distil Stable-Baselines3 experts into small students.")
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in _commands().items():
        p = add_command(sub, name, command)
        # also after the command (`policykd distill --threads 4`); left unset there unless given
        p.add_argument("--threads", type=int, default=argparse.SUPPRESS, help=THREADS_HELP)
        for flags, kwargs in COMMAND_ARGUMENTS.get(name, []):
            if kwargs.get("required") and flags[0].startswith("-"):
                kwargs = {**kwargs, "required": False, "help": f"{kwargs.get('help', '')} (required)".strip()}
            p.add_argument(*flags, **kwargs)
        p.set_defaults(**(file_values or {}).get(name, {}))
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line with its ``--config`` file's values under it (the one mechanism for every
    command). The file's keys are the command's long options (``n-updates``, ``seeds``, ``env``)
    or their dests, or the fields of the job's config dataclass, so a run folder's config.yml
    reruns that run. Raises PolicyKDError for a bad file or a missing required option."""
    args = _parser().parse_args(argv)
    if getattr(args, "config", None):
        command = _commands()[args.command]
        config_cls = _config_class(command)
        options = [OPTIONS[name] for name in (*command.options, *COMMON) if name != "config"]
        options += [(flags, kwargs) for flags, kwargs in COMMAND_ARGUMENTS.get(args.command, []) if flags[0][0] == "-"]
        from policykd.jobs.experiment import read_config_file

        values = read_config_file(args.config, config_cls, config_aliases(options))
        args = _parser({args.command: values}).parse_args(argv)
    _check_required(args)
    if getattr(args, "quiet", False) and getattr(args, "verbose", False):
        raise PolicyKDError("-q/--quiet and -v/--verbose contradict each other; pass one of them")
    if getattr(args, "quiet", False):
        args.progress_bar = False
    return args


def _config_class(command: Command) -> type | None:
    """The job's config dataclass named by ``command.config`` (``module:Class``), imported now."""
    if command.config is None:
        return None
    import importlib

    module, _, name = command.config.partition(":")
    return getattr(importlib.import_module(module), name)


def _check_required(args: argparse.Namespace) -> None:
    for flags, kwargs in COMMAND_ARGUMENTS.get(args.command, []):
        name, dest = option_keys(flags, kwargs)
        if kwargs.get("required") and getattr(args, dest, None) is None:
            raise PolicyKDError(f"{flags[0]} is required: pass it, or set {name} in the --config file")


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def _fmt_return(s: dict[str, Any], who: str) -> list[str]:
    """``who``'s (teacher / student) return as "mean ± std" and "[ci low, ci high]" from a summary."""
    mean, std, ci = s[f"{who}_return_mean"], s[f"{who}_return_std"], s[f"{who}_return_ci95"]
    return [f"{mean:.1f} ± {std:.1f}", f"[{ci[0]:.1f}, {ci[1]:.1f}]"]


def _cmd_distill(args: argparse.Namespace) -> None:
    from policykd.jobs.config import DistillConfig, parse_task
    from policykd.jobs.distill import distill
    from policykd.jobs.evaluate import EVAL_SEED_OFFSET

    config = _experiment_config(args, DistillConfig)
    # --task ENV=TEACHER, or (env, teacher) pairs as a run folder's config.yml holds them
    tasks = tuple(parse_task(t) if isinstance(t, str) else tuple(t) for t in config.tasks)
    s = distill(dataclasses.replace(config, tasks=tasks))
    if "tasks" in s:
        return _print_tasks_summary(s)
    if len(s["teachers"]) > 1:
        print(f"\nensemble of {len(s['teachers'])} teachers, merge {s['merge']}:")
        for t in s["teachers"]:
            print(f"  {t['algo']:>6} {t['source']}: {t['mean']:.1f} ± {t['std']:.1f} ({t['params']:,} params)")
        print("the student is compared with the best of them; params: the sum of the teachers'")
    if s.get("defaults"):
        print(f"\n{s['defaults']}")
    if s.get("frame_stacks"):  # Atari: host or GPU, and why
        print(s["frame_stacks"])
    print(
        f"\n{s['env_id']}: {s['teacher_algo']} teacher -> student, loss {s['loss']}, tau {s['temperature']:g}, "
        f"{s['n_teacher_transitions']:,} teacher transitions, {s['n_updates']:,} updates, {s['n_eval_episodes']} eval episodes"
    )
    _print_table(
        [
            [
                "teacher",
                *_fmt_return(s, "teacher"),
                "100.0",
                f"{s['teacher_params']:,}",
                f"{s['teacher_latency_ms']:.3f}",
            ],
            [
                "student",
                *_fmt_return(s, "student"),
                f"{s['pct_of_teacher']:.1f}",
                f"{s['student_params']:,} ({100 * s['param_fraction']:.0f} %)",
                f"{s['student_latency_ms']:.3f}",
            ],
        ],
        ["policy", "return (mean ± std)", "95 % CI", "% of teacher", "params", "latency (ms)"],
    )
    raw = s["pct_of_teacher_raw"]  # None where returns can be negative: the ratio would mislead
    print(
        f"% of teacher: (student - random) / (teacher - random), random policy {s['random_return_mean']:.1f}"
        + ("" if raw is None else f"; raw student / teacher {raw:.1f} %")
    )
    print(
        f"returns over {s['n_eval_episodes']} episodes, env seeds from {s['seed'] + EVAL_SEED_OFFSET}; 95 % CI: "
        f"bootstrap of the mean; policykd evaluate {Path(s['out_dir']) / 'student'} replays them"
    )
    print(f"run folder: {s['out_dir']} (summary.json, student/, tb/), {s['wall_time_s']:.0f} s")
    _print_videos(s)


def _print_videos(s: dict[str, Any]) -> None:
    if s.get("videos"):
        print(f"videos (teacher and student, same episodes) in {s['out_dir']}: {', '.join(s['videos'])}")


def _print_tasks_summary(s: dict[str, Any]) -> None:
    rows = [
        [
            env_id,
            f"{r['teacher']['mean']:.1f} ± {r['teacher']['std']:.1f}",
            f"{r['student']['mean']:.1f} ± {r['student']['std']:.1f}",
            f"{r['pct_of_teacher']:.1f}",
            f"{r['teacher_params']:,}",
        ]
        for env_id, r in s["tasks"].items()
    ]
    print()
    _print_table(rows, ["task", "teacher return", "student return", "% of teacher", "teacher params"])
    print(
        f"one student of {s['student_params']:,} params for {len(rows)} tasks (teachers: {s['sum_teacher_params']:,} "
        f"in all); mean % of teacher {s['overall_pct_of_teacher']:.1f}; run folder {s['out_dir']}"
    )
    for task, line in (s.get("frame_stacks") or {}).items():
        print(f"{task}: {line}")
    _print_videos(s)


def _cmd_collect(args: argparse.Namespace) -> None:
    from policykd.jobs.collect import collect_to_file
    from policykd.jobs.config import CollectConfig

    config = CollectConfig(**config_values(args, CollectConfig))
    buffer, stats, teacher = collect_to_file(config, args.out, overwrite=args.overwrite)
    returns = stats.episode_returns
    mean = f"{sum(returns) / len(returns):.1f} over {len(returns)} episodes" if returns else "no finished episode"
    print(f"{len(buffer):,} transitions labelled by {teacher.describe()}; driver return {mean}; wrote {args.out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from policykd.jobs.evaluate import choose_episodes, evaluate_policy
    from policykd.jobs.play import resolve_policy
    from policykd.zoo.layout import RECORD_FILE
    from policykd.zoo.scoring import SCORE_EPISODES, SCORE_SEED, record_score, score_entry

    if args.record and not (Path(args.source) / RECORD_FILE).is_file():  # refused before playing, not after
        raise PolicyKDError(f"--record needs a zoo folder with {RECORD_FILE}; {args.source} has none")
    if args.stochastic and args.deterministic:
        raise PolicyKDError("--stochastic and --deterministic contradict each other; give one of them")
    policy, recipe, what = resolve_policy(
        args.source, args.env_id, args.stochastic, trust_pickles=args.trust_pickles, device=args.device
    )
    if args.gif and args.video_dir is None:
        raise PolicyKDError("--gif converts the videos of --video DIR; add --video DIR")
    if args.video_dir is not None:
        from policykd.jobs.video import check_video_support

        check_video_support(recipe, args.video_episodes)  # before playing, not after
    episodes = choose_episodes(
        args.source,
        recipe.env_id,
        seed=args.seed,
        episode_seed=args.episode_seed,
        n_episodes=args.episodes,
        deterministic=True if args.deterministic else (False if args.stochastic else None),
        zoo=(SCORE_SEED, SCORE_EPISODES) if args.record else None,
    )
    bar = "evaluate" if getattr(args, "progress_bar", True) else None
    stats = evaluate_policy(
        policy, recipe, episodes.n_episodes, seed=episodes.env_seed, deterministic=episodes.deterministic, progress=bar
    )
    print(
        f"{what}: return {stats.mean:.2f} ± {stats.std:.2f}, 95 % CI [{stats.ci95[0]:.2f}, {stats.ci95[1]:.2f}] "
        f"over {stats.n_episodes} episodes ({episodes.describe()})"
    )
    if args.video_dir is not None:
        _record_video(args, policy, recipe, episodes.env_seed, episodes.deterministic)
    if args.record:
        entry = score_entry(stats, seed=episodes.env_seed, deterministic=episodes.deterministic)
        print(f"recorded in {record_score(args.source, entry)}")


def _record_video(args: argparse.Namespace, policy: Any, recipe: Any, seed: int, deterministic: bool) -> None:
    from policykd.data.teachers import Teacher
    from policykd.jobs.video import record_episodes

    name = "teacher" if isinstance(policy, Teacher) else "student"
    options = dict(name=name, n_episodes=args.video_episodes, seed=seed, deterministic=deterministic)
    paths = record_episodes(policy, recipe, args.video_dir, **options, gif=args.gif)
    print(f"videos (the first {args.video_episodes} episode(s) of env 0, seed {seed}): {', '.join(map(str, paths))}")


def _cmd_export(args: argparse.Namespace) -> None:
    from policykd.jobs.export import export_onnx, export_sb3
    from policykd.jobs.export_hub import export_hub

    task = args.env_id
    if args.export_format == "hub":
        hub = export_hub(args.student, args.out, task=task)
        print(
            f"wrote {hub.folder}: {', '.join(hub.files)}; checked offline (every file reads, and {_sb3_check(hub.sb3)})"
        )
        print(f"push it with: huggingface-cli upload <user>/{hub.sb3.path.stem} {hub.folder}")
        return
    if args.export_format == "sb3":
        sb3 = export_sb3(args.student, args.out, task=task)
        print(f"wrote {sb3.path} ({sb3.size_bytes / 1e3:.1f} kB, {sb3.n_params:,} params); {_sb3_check(sb3)}")
        return
    default = "policy.onnx" if task is None else f"policy-{task.replace('/', '-')}.onnx"
    report = export_onnx(args.student, args.out or Path(args.student) / default, task=task)
    check = "identical actions" if report.max_abs_diff == 0 else f"actions within {report.max_abs_diff:.1g}"
    print(
        f"wrote {report.path} ({report.size_bytes / 1e3:.1f} kB, {report.n_params:,} params); "
        f"onnxruntime and the student agree on {report.n_checked} random observations ({check}); "
        f"batch-1 latency {report.latency_ms_onnx:.3f} ms onnxruntime vs {report.latency_ms_torch:.3f} ms torch"
    )


def _sb3_check(report: Any) -> str:
    check = "identical actions" if report.max_abs_diff == 0 else f"actions within {report.max_abs_diff:.1g}"
    algo = report.algo.upper()
    return f"{algo}.load plays it: its greedy predict and the student agree on {report.n_checked} random observations ({check})"


def _experiment_config(args: argparse.Namespace, config_cls: type) -> Any:
    """``config_cls`` from the options given, over the --config file's values (:func:`parse_args`
    put them in ``args``), over its own defaults."""
    return config_cls(**config_values(args, config_cls))


def _run_experiment(
    args: argparse.Namespace,
    config_cls: type,
    run: Callable[[Any], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
    files: str,
) -> None:
    """Run an experiment job (sweep, compare-drivers) on its config, print its Markdown report and
    the ``files`` it wrote into its output folder."""
    import time

    started = time.perf_counter()
    summary = run(_experiment_config(args, config_cls))
    print(markdown(summary))
    print(f"wrote {files} and tb/ into {summary['out_dir']} ({time.perf_counter() - started:.0f} s)")


def _cmd_sweep(args: argparse.Namespace) -> None:
    from policykd.jobs.sweep import SweepConfig, run_sweep, sweep_markdown

    files = "sweep.md, sweep.csv, runs.csv, sweep.png"
    _run_experiment(args, SweepConfig, run_sweep, sweep_markdown, files)


def _cmd_compare_drivers(args: argparse.Namespace) -> None:
    from policykd.jobs.drivers import DriversConfig, compare_drivers, drivers_markdown

    files = "drivers.md, drivers.csv, drivers.png"
    _run_experiment(args, DriversConfig, compare_drivers, drivers_markdown, files)


def _cmd_zoo(args: argparse.Namespace) -> None:
    from policykd.zoo.catalog import list_experts
    from policykd.zoo.presets import available_presets

    rows = [
        [
            e["algo"],
            e["env_id"],
            e["score"],
            e["reference"],
            e["timesteps"],
            e["size"],
            e["status"],
            os.path.relpath(e["path"]),
        ]  # what --teacher takes, from here
        for e in list_experts(getattr(args, "zoo_dir", None))
    ]
    _print_table(
        rows, ["algo", "env", "score (mean ± std)", "rl-zoo reference", "timesteps", "size", "status", "--teacher"]
    )
    print(f"\nenv presets (--env): {', '.join(available_presets())}")


def _cmd_train_expert(args: argparse.Namespace) -> None:
    from policykd.zoo.experts import train_expert
    from policykd.zoo.presets import find_zoo

    if not getattr(args, "env_id", None):
        raise PolicyKDError("train-expert needs --env ENV_ID, e.g. --env CartPole-v1")
    zoo_dir = find_zoo(getattr(args, "zoo_dir", None))
    if zoo_dir is None:
        raise PolicyKDError("train-expert needs a zoo to write into: pass --zoo DIR or set POLICYKD_ZOO=DIR")
    run_dir = train_expert(
        args.algo,
        args.env_id,
        zoo_dir=zoo_dir,
        seed=args.seed,
        n_timesteps=args.n_timesteps,
        checkpoint_every=args.checkpoint_every,
        run_id=args.run_id,
        device=args.device,
        selection_episodes=args.selection_episodes,
        progress_bar=getattr(args, "progress_bar", True) and sys.stderr.isatty(),  # SB3's bar: a terminal only
    )
    print(f"expert written to {run_dir}; measure it with: policykd evaluate {run_dir} --episodes 30 --record")


def _cmd_finetune(args: argparse.Namespace) -> None:
    from policykd.jobs.finetune import FinetuneConfig, finetune

    s = finetune(_experiment_config(args, FinetuneConfig))
    print(
        f"\n{s['env_id']}: {s['algo'].upper()} student from {s['start']}, lambda {s['schedule']}, "
        f"{s['n_timesteps']:,} env steps, hyperparameters from {s['hyperparams_source']}"
    )
    teachers = [(f"teacher {t['source']}", t["return"]) for t in s.get("teachers", [])]
    if teachers:
        print(f"ensemble of {len(teachers)} teachers, merge {s['merge']}; the student is compared with the best")
    best = s["best"]
    students = [("student (last)", s["student_return"]),
                (f"student (best: step {best['steps']:,})", best["student_return"])]  # fmt: skip
    rows = [[who, f"{r['mean']:.1f} ± {r['std']:.1f}", f"[{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]"]
            for who, r in (*(teachers or [("teacher", s["teacher_return"])]), *students)]  # fmt: skip
    _print_table(rows, ["policy", "return (mean ± std)", "95 % CI"])
    print(f"best: the learning curve's best validation return ({best['validation_return']:.1f}, env seeds from "
          f"{s['validation_seed']}), scored on the held-out episodes above")  # fmt: skip
    if s["hyperparams_not_applied"]:
        print(f"rl-zoo settings not applied: {', '.join(f'{k}: {v}' for k, v in s['hyperparams_not_applied'].items())}")
    normalized = "vecnormalize.json, best_vecnormalize.json, " if s.get("vec_normalize") else ""
    files = f"summary.json, model.zip, best_model.zip, {normalized}tb/"
    print(f"run folder: {s['out_dir']} ({files}), {s['wall_time_s']:.0f} s")


COMMANDS = {
    "distill": _cmd_distill,
    "finetune": _cmd_finetune,
    "collect": _cmd_collect,
    "evaluate": _cmd_evaluate,
    "sweep": _cmd_sweep,
    "compare-drivers": _cmd_compare_drivers,
    "export": _cmd_export,
    "zoo": _cmd_zoo,
    "train-expert": _cmd_train_expert,
}


class _OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line (``policykd distill: error: ...``), not the whole usage, with
    a "did you mean" for a mistyped command, choice or option."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)  # the command an unknown option came with
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        hint = _did_you_mean(message, self._known_options())
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}{hint}; see {self.prog} --help\n")

    def _known_options(self) -> list[str]:
        """The long options of the command on this command line (of this parser if it has none):
        argparse reports unknown options from the top-level parser, which knows no command's."""
        parser: argparse.ArgumentParser = self
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                command = next((a for a in getattr(self, "_argv", []) if a in action.choices), None)
                parser = action.choices[command] if command else self
        return [o for a in parser._actions for o in a.option_strings if o.startswith("--")]


def _did_you_mean(message: str, options: list[str]) -> str:
    """`` (did you mean 'distill'?)`` for the closest valid word to the one ``message`` rejects."""
    import difflib
    import re

    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        words, candidates = [choice.group(1)], re.findall(r"'([^']*)'", choice.group(2))
    elif message.startswith("unrecognized arguments:"):
        words = [w.split("=")[0] for w in message.split(":", 1)[1].split() if w.startswith("--")]
        candidates = options
    else:
        return ""
    names = {c.lstrip("-"): c for c in candidates}  # compared without dashes, which every option shares
    for word in words:
        name = word.lstrip("-")
        # an option with a word added or cut (--out-dir for --out) before one merely spelt alike
        stems = [n for n in names if name.startswith(f"{n}-") or n.startswith(f"{name}-")]
        close = sorted(stems, key=len, reverse=True)[:1] or difflib.get_close_matches(name, names, n=1, cutoff=0.7)
        if close:
            suggestion = names[close[0]]
            return f" (did you mean {suggestion}?)" if word.startswith("-") else f" (did you mean '{suggestion}'?)"
    return ""


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run the way Ctrl-C does: its run folder is marked failed


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)  # --help and usage errors exit here, before anything heavy is imported
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args = parse_args(argv)
        from policykd.progress import NORMAL, QUIET, VERBOSE, configure_output

        configure_output(QUIET if args.quiet else VERBOSE if args.verbose else NORMAL)
        if args.threads < 1:
            raise PolicyKDError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
        COMMANDS[args.command](args)
    except PolicyKDError as err:
        _fail(args.command, str(err), 2)
    except OSError as err:  # a path that cannot be read or written, a full disk: the user's to fix
        where = f" ({err.filename})" if err.filename else ""
        _fail(args.command, f"{err.strerror or err}{where}; check the path, its permissions and free space", 2)
    except KeyboardInterrupt as err:  # a job may say where it stopped and how to resume
        _fail(args.command, str(err) or "interrupted; files written before the interruption are kept", 130)


def _fail(command: str, message: str, code: int) -> NoReturn:
    message = " ".join(message.split())  # one line, whatever the library put in the message
    print(f"policykd {command}: error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
