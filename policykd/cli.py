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

from policykd.cli_options import COLLECT, EXPERIMENT, LOSS, TRAINING, Command, config_aliases, config_values
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
COMPARE_EXAMPLES = """examples:
  policykd compare-drivers --teacher agents/ppo/LunarLander-v3_1 --seeds 3
  policykd compare-drivers --env CartPole-v1 --drivers student dagger --dagger-schedule exponential:0.5

drivers: teacher (beta = 1), student (beta = 0: on-policy, the teacher only labels), dagger (the teacher
acts with probability beta per step; schedules constant:B, linear:N, exponential:D).
"""


def _commands() -> dict[str, Command]:
    return {
        "collect": Command("teacher-driven rollouts -> labelled buffer (.npz)", (*COLLECT, "trust_pickles")),
        "distill": Command(
            "train a student (collecting first, or from --buffer); --task for several tasks",
            ("config", *COLLECT, "trust_pickles", "buffer", "task", "task_weights", "input_width", *LOSS, *TRAINING),
            DISTILL_EXAMPLES,
        ),
        "evaluate": Command(
            "play a teacher or a student and report its return",
            ("env", "seed", "trust_pickles"),
            defaults={"env_id": None, "seed": 0, "trust_pickles": False},
        ),
        "sweep": Command(
            "distil one student per (temperature, seed) from one buffer; table + plots",
            (
                *EXPERIMENT,
                "trust_pickles",
                "temperatures",
                "n_transitions",
                "epsilon",
                "action_noise",
                "temperature_on",
                "kl_direction",
                "n_updates",
                "bins",
            ),
            SWEEP_EXAMPLES,
        ),  # fmt: skip
        "compare-drivers": Command(
            "student return vs teacher labels for teacher / student / DAgger drivers",
            (
                *EXPERIMENT,
                "trust_pickles",
                "drivers",
                "dagger_schedule",
                "rounds",
                "round_transitions",
                "round_updates",
                "capacity",
                "loss",
                "temperature",
                "stochastic_drivers",
            ),
            COMPARE_EXAMPLES,
        ),  # fmt: skip
        "export": Command("write a student as one ONNX file (observations in, env actions out), checked"),
        "zoo": Command("list the shipped experts and their recorded scores"),
        "train-expert": Command(
            "train (or resume) an rl-zoo expert into agents/", ("env", "seed"), defaults={"seed": 0}
        ),
    }


# Arguments that belong to one command only: (flags, argparse keyword arguments).
COMMAND_ARGUMENTS: dict[str, list[tuple[tuple[str, ...], dict[str, Any]]]] = {
    "collect": [(("--out",), dict(required=True, help="buffer file to write (.npz)"))],
    "evaluate": [
        (("source",), dict(help="student run folder (…/student), exported student (.onnx), rl-zoo folder, SB3 .zip or hub id")),
        (("--episodes",), dict(type=int, default=20)),
        (("--stochastic",), dict(action="store_true", help="sample actions instead of acting greedily (a DQN / QR-DQN acts epsilon-greedily with its saved exploration rate, as SB3's predict does)")),
        (("--record",), dict(action="store_true", help="write the score into the zoo folder's expert.json")),
    ],
    "export": [
        (("student",), dict(help="student folder (…/student, with student.json and student.safetensors)")),
        (("--out",), dict(help="the .onnx file to write (default: <student>/policy.onnx)")),
    ],
    "train-expert": [
        (("--algo",), dict(required=True)),
        (("--n-timesteps",), dict(type=int, help="default: rl-zoo's budget")),
        (("--checkpoint-every",), dict(type=int, default=50_000)),
        (("--run-id",), dict(type=int, default=1, help="run folder <algo>/<EnvId>_<run-id> (default 1)")),
        (("--zoo-dir",), dict(default=None, help="default: the repository's agents/")),
        (("--device",), dict(default="cpu", help="torch device: cpu (default; fastest for MLPs), cuda or auto")),
        (("--selection-episodes",), dict(type=int, default=None, help="episodes that score the best and the final checkpoint before one ships (default 30, the zoo's protocol; 0: trust the in-training evaluations)")),
    ],
}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    from policykd.cli_options import THREADS_HELP, add_command

    parser = _OneLineParser(prog="policykd", description="Distil Stable-Baselines3 experts into small students.")
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in _commands().items():
        p = add_command(sub, name, command)
        for flags, kwargs in COMMAND_ARGUMENTS.get(name, []):
            p.add_argument(*flags, **kwargs)
    return parser


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

    config = _experiment_config(args, DistillConfig)
    s = distill(dataclasses.replace(config, tasks=tuple(parse_task(t) for t in config.tasks)))
    if "tasks" in s:
        return _print_tasks_summary(s)
    if len(s["teachers"]) > 1:
        print(f"\nensemble of {len(s['teachers'])} teachers, merge {s['merge']}:")
        for t in s["teachers"]:
            print(f"  {t['algo']:>6} {t['source']}: {t['mean']:.1f} ± {t['std']:.1f} ({t['params']:,} params)")
        print("the student is compared with the best of them; params: the sum of the teachers'")
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
    print(
        f"% of teacher: (student - random) / (teacher - random), random policy {s['random_return_mean']:.1f}; "
        f"raw student / teacher {s['pct_of_teacher_raw']:.1f} %"
    )
    print(f"run folder: {s['out_dir']} (summary.json, student/, tb/), {s['wall_time_s']:.0f} s")


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


def _cmd_collect(args: argparse.Namespace) -> None:
    from policykd.jobs.collect import collect
    from policykd.jobs.config import CollectConfig

    config = CollectConfig(**config_values(args, CollectConfig))
    buffer, stats, teacher = collect(config)
    buffer.save(args.out)
    returns = stats.episode_returns
    mean = f"{sum(returns) / len(returns):.1f} over {len(returns)} episodes" if returns else "no finished episode"
    print(f"{len(buffer):,} transitions labelled by {teacher.describe()}; driver return {mean}; wrote {args.out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from policykd.jobs.evaluate import evaluate_policy
    from policykd.jobs.play import resolve_policy
    from policykd.zoo.layout import RECORD_FILE
    from policykd.zoo.scoring import record_score, score_entry

    if args.record and not (Path(args.source) / RECORD_FILE).is_file():  # refused before playing, not after
        raise PolicyKDError(f"--record needs a zoo folder with {RECORD_FILE}; {args.source} has none")
    policy, recipe, what = resolve_policy(args.source, args.env_id, args.stochastic, trust_pickles=args.trust_pickles)
    deterministic = not args.stochastic
    stats = evaluate_policy(policy, recipe, args.episodes, seed=args.seed, deterministic=deterministic)
    print(
        f"{what}: return {stats.mean:.2f} ± {stats.std:.2f}, 95 % CI [{stats.ci95[0]:.2f}, {stats.ci95[1]:.2f}] "
        f"over {stats.n_episodes} episodes (seed {args.seed})"
    )
    if args.record:
        path = record_score(args.source, score_entry(stats, seed=args.seed, deterministic=deterministic))
        print(f"recorded in {path}")


def _cmd_export(args: argparse.Namespace) -> None:
    from policykd.jobs.export import export_onnx

    report = export_onnx(args.student, args.out or Path(args.student) / "policy.onnx")
    check = "identical actions" if report.max_abs_diff == 0 else f"actions within {report.max_abs_diff:.1g}"
    print(
        f"wrote {report.path} ({report.size_bytes / 1e3:.1f} kB, {report.n_params:,} params); "
        f"onnxruntime and the student agree on {report.n_checked} random observations ({check}); "
        f"batch-1 latency {report.latency_ms_onnx:.3f} ms onnxruntime vs {report.latency_ms_torch:.3f} ms torch"
    )


def _experiment_config(args: argparse.Namespace, config_cls: type) -> Any:
    """``config_cls`` from the --config file (if any) overridden by the options given. The file's
    keys are the command's long options (``seeds``, ``env``, ``n-transitions``...) or the fields."""
    from policykd.jobs.experiment import read_config_file

    aliases = config_aliases(_commands()[args.command].options, config_cls)
    values = read_config_file(args.config, config_cls, aliases) if getattr(args, "config", None) else {}
    return config_cls(**{**values, **config_values(args, config_cls)})


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


def _cmd_zoo(_: argparse.Namespace) -> None:
    from policykd.zoo.catalog import list_experts

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
        for e in list_experts()
    ]
    _print_table(
        rows, ["algo", "env", "score (mean ± std)", "rl-zoo reference", "timesteps", "size", "status", "--teacher"]
    )


def _cmd_train_expert(args: argparse.Namespace) -> None:
    from policykd.zoo.experts import train_expert
    from policykd.zoo.presets import ZOO_DIR

    if not getattr(args, "env_id", None):
        raise PolicyKDError("train-expert needs --env ENV_ID, e.g. --env CartPole-v1")
    run_dir = train_expert(
        args.algo,
        args.env_id,
        zoo_dir=args.zoo_dir or ZOO_DIR,
        seed=args.seed,
        n_timesteps=args.n_timesteps,
        checkpoint_every=args.checkpoint_every,
        run_id=args.run_id,
        device=args.device,
        selection_episodes=args.selection_episodes,
    )
    print(f"expert written to {run_dir}; measure it with: policykd evaluate {run_dir} --episodes 30 --record")


COMMANDS = {
    "distill": _cmd_distill,
    "collect": _cmd_collect,
    "evaluate": _cmd_evaluate,
    "sweep": _cmd_sweep,
    "compare-drivers": _cmd_compare_drivers,
    "export": _cmd_export,
    "zoo": _cmd_zoo,
    "train-expert": _cmd_train_expert,
}


class _OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line (``policykd distill: error: ...``), not the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; see {self.prog} --help\n")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run the way Ctrl-C does: its run folder is marked failed


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
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
