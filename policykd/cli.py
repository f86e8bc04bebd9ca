"""``policykd`` command line: parse, call the library, print. Nothing else lives here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policykd.errors import PolicyKDError

DISTILL_EXAMPLES = """examples:
  policykd distill                                   # the shipped CartPole PPO expert, preset budgets
  policykd distill --env Pendulum-v1                 # the preset's default expert for that env
  policykd distill --teacher agents/dqn/CartPole-v1_1 --loss mse
  policykd distill --buffer runs/cartpole.npz --temperature 0.5 --temperature-on both
"""


def _add_collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--teacher",
        dest="teachers",
        action="append",
        default=[],
        help="rl-zoo folder, SB3 .zip or hub id (default: the env preset's expert); "
        "repeat it for an ensemble of teachers on one task",
    )
    p.add_argument(
        "--merge",
        help="how an ensemble's targets combine: mean-probs | mean-logits | entropy-weighted "
        "| most-confident (default mean-probs)",
    )
    p.add_argument("--teacher-weights", type=float, nargs="+", help="one weight per --teacher, for the merge")
    p.add_argument(
        "--teacher-drive",
        default="merged",
        help="who acts among several teachers: merged | round-robin (per episode) | random | first",
    )
    p.add_argument("--env", dest="env_id", help="env id (default: the teacher's, else CartPole-v1)")
    p.add_argument("--n-transitions", type=int, help="labelled transitions to collect (default: preset)")
    p.add_argument("--n-envs", type=int, help="vectorised envs while collecting (default: preset)")
    p.add_argument("--epsilon", type=float, help="epsilon-greedy exploration for discrete actions")
    p.add_argument("--action-noise", type=float, help="Gaussian action noise, fraction of the half action range")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-teacher-check",
        dest="teacher_check",
        action="store_false",
        help="skip refusing a teacher that plays far below its recorded score",
    )


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
# Options whose CLI name differs from the config field (also the keys a --config file may use).
SWEEP_ALIASES = {
    "env": "env_id",
    "seeds": "n_seeds",
    "hidden": "hidden_sizes",
    "lr": "learning_rate",
    "eval_episodes": "n_eval_episodes",
    "bins": "n_bins",
    "out": "out_dir",
}
COMPARE_ALIASES = {
    **SWEEP_ALIASES,
    "rounds": "n_rounds",
    "round_transitions": "n_transitions_per_round",
    "round_updates": "n_updates_per_round",
}


def _add_experiment_args(p: argparse.ArgumentParser) -> None:
    """Options shared by sweep and compare-drivers; every default is None so that a --config file
    fills what the command line leaves out."""
    p.add_argument("--config", help="YAML file with any of these options as keys (the command line wins)")
    p.add_argument("--teacher", help="rl-zoo folder, SB3 .zip or hub id (default: the env preset's expert)")
    p.add_argument("--env", dest="env_id", help="env id (default: the teacher's, else CartPole-v1)")
    p.add_argument("--seeds", dest="n_seeds", type=int, help="students per setting, for the CIs (default 3)")
    p.add_argument("--n-envs", type=int, help="vectorised envs while collecting (default: preset)")
    p.add_argument("--hidden", dest="hidden_sizes", type=int, nargs="+", help="student MLP hidden sizes")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", dest="learning_rate", type=float)
    p.add_argument("--eval-episodes", dest="n_eval_episodes", type=int, help="episodes per evaluation (default 10)")
    p.add_argument("--seed", type=int, help="first seed (default 0)")
    p.add_argument("--out", dest="out_dir", help="output folder for tables, plots and TensorBoard runs")
    p.add_argument(
        "--no-teacher-check",
        dest="teacher_check",
        action="store_const",
        const=False,
        help="skip refusing a teacher that plays far below its recorded score",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="policykd", description="Distil Stable-Baselines3 experts into small students."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: small MLPs run fastest on one; raise it for CNNs)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="teacher-driven rollouts -> labelled buffer (.npz)")
    _add_collect_args(p)
    p.add_argument("--out", required=True, help="buffer file to write (.npz)")

    p = sub.add_parser(
        "distill",
        help="train a student (collecting first, or from --buffer)",
        epilog=DISTILL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_collect_args(p)
    p.add_argument("--buffer", help="train from this saved buffer instead of collecting")
    p.add_argument(
        "--task",
        dest="tasks",
        action="append",
        default=[],
        help="ENV=TEACHER (or ENV for its preset expert); repeat for one student of several tasks",
    )
    p.add_argument("--task-weights", type=float, nargs="+", help="share of each batch per --task (default equal)")
    p.add_argument("--loss", default="kl", help="kl | nll | mse (default kl)")
    p.add_argument("--temperature", type=float, default=1.0, help="tau: softmax(x/tau) or std*tau (default 1)")
    p.add_argument("--temperature-on", default="teacher", help="teacher | both (default teacher)")
    p.add_argument("--kl-direction", default="forward", help="forward = KL(teacher||student) | reverse")
    p.add_argument("--tau2-scaling", action="store_true", help="multiply the KL by tau^2 (Hinton)")
    p.add_argument(
        "--no-q-center",
        dest="center_q",
        action="store_false",
        help="mse on raw Q-values instead of Q minus its mean over actions",
    )
    p.add_argument(
        "--nll-min-std",
        type=float,
        default=0.1,
        help="floor on the student's std in continuous nll (default 0.1; 0 disables)",
    )
    p.add_argument("--hidden", dest="hidden_sizes", type=int, nargs="+", help="student MLP hidden sizes")
    p.add_argument("--cnn-width", type=float, help="NatureCNN width multiplier for image observations")
    p.add_argument("--n-updates", type=int, help="gradient steps (default: preset)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", dest="learning_rate", type=float)
    p.add_argument("--eval-episodes", dest="n_eval_episodes", type=int)
    p.add_argument("--eval-every", type=int, default=0, help="updates between evaluations (0: at the end)")
    p.add_argument("--out", dest="out_dir", help="run folder (default: runs/<env>/<loss>-tau<t>-seed<s>)")
    p.add_argument("--no-progress", dest="progress_bar", action="store_false")

    p = sub.add_parser("evaluate", help="play a teacher or a student and report its return")
    p.add_argument(
        "source", help="student run folder (…/student), exported student (.onnx), rl-zoo folder, SB3 .zip or hub id"
    )
    p.add_argument("--env", dest="env_id")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--stochastic",
        action="store_true",
        help="sample actions instead of acting greedily (a DQN / QR-DQN acts epsilon-greedily with "
        "its saved exploration rate, as SB3's predict does)",
    )
    p.add_argument("--record", action="store_true", help="write the score into the zoo folder's expert.json")

    p = sub.add_parser(
        "sweep",
        help="distil one student per (temperature, seed) from one buffer; table + plots",
        epilog=SWEEP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_experiment_args(p)
    p.add_argument("--temperatures", type=float, nargs="*", help="taus to sweep (default 0.01 0.1 0.5 1 2 5)")
    p.add_argument("--n-transitions", type=int, help="transitions in the one buffer (default: preset)")
    p.add_argument("--epsilon", type=float, help="epsilon-greedy exploration while collecting (discrete)")
    p.add_argument("--action-noise", type=float, help="Gaussian action noise while collecting (continuous)")
    p.add_argument("--temperature-on", help="teacher | both (default teacher)")
    p.add_argument("--kl-direction", help="forward = KL(teacher||student) | reverse")
    p.add_argument("--n-updates", type=int, help="gradient steps per student (default: preset)")
    p.add_argument(
        "--bins", dest="n_bins", type=int, help="bins per dimension for state-visitation entropy (default 8)"
    )

    p = sub.add_parser(
        "compare-drivers",
        help="student return vs teacher labels for teacher / student / DAgger drivers",
        epilog=COMPARE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_experiment_args(p)
    p.add_argument("--drivers", nargs="+", help="any of teacher student dagger (default: all three)")
    p.add_argument("--dagger-schedule", help="beta schedule of the dagger driver (default linear:<rounds/2>)")
    p.add_argument("--rounds", dest="n_rounds", type=int, help="collection + training rounds (default 10)")
    p.add_argument(
        "--round-transitions", dest="n_transitions_per_round", type=int, help="teacher labels per round (default 5000)"
    )
    p.add_argument("--round-updates", dest="n_updates_per_round", type=int, help="updates per round (default 500)")
    p.add_argument("--capacity", type=int, help="ring buffer size (default: keep every label)")
    p.add_argument("--loss", help="kl | nll | mse (default kl; mse for TD3/DDPG)")
    p.add_argument("--temperature", type=float, help="tau of the targets (default 1)")
    p.add_argument(
        "--stochastic-drivers",
        dest="deterministic_drivers",
        action="store_const",
        const=False,
        help="drivers sample their actions instead of acting greedily",
    )

    p = sub.add_parser("export", help="write a student as one ONNX file (observations in, env actions out), checked")
    p.add_argument("student", help="student folder (…/student, with student.json and student.pt)")
    p.add_argument("--out", help="the .onnx file to write (default: <student>/policy.onnx)")

    sub.add_parser("zoo", help="list the shipped experts and their recorded scores")

    p = sub.add_parser("train-expert", help="train (or resume) an rl-zoo expert into agents/")
    p.add_argument("--algo", required=True)
    p.add_argument("--env", dest="env_id", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-timesteps", type=int, help="default: rl-zoo's budget")
    p.add_argument("--checkpoint-every", type=int, default=50_000)
    p.add_argument("--run-id", type=int, default=1, help="run folder <algo>/<EnvId>_<run-id> (default 1)")
    p.add_argument("--zoo-dir", default=None, help="default: the repository's agents/")
    p.add_argument("--device", default="cpu", help="torch device: cpu (default; fastest for MLPs), cuda or auto")
    p.add_argument(
        "--selection-episodes",
        type=int,
        default=None,
        help="episodes that score the best and the final checkpoint before one ships "
        "(default 30, the zoo's protocol; 0: trust the in-training evaluations)",
    )
    return parser


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def _fmt_return(mean: float, std: float, ci: list[float]) -> list[str]:
    return [f"{mean:.1f} ± {std:.1f}", f"[{ci[0]:.1f}, {ci[1]:.1f}]"]


def _config_fields(args: argparse.Namespace, config_class: Any) -> dict[str, Any]:
    """The parsed options a config dataclass takes; repeated / list options become tuples."""
    fields = set(config_class.__dataclass_fields__)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in fields}
    return values


def _cmd_distill(args: argparse.Namespace) -> None:
    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import distill

    if args.tasks:
        return _cmd_distill_tasks(args)
    config = DistillConfig(**_config_fields(args, DistillConfig))
    s = distill(config)
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
                *_fmt_return(s["teacher_return_mean"], s["teacher_return_std"], s["teacher_return_ci95"]),
                "100.0",
                f"{s['teacher_params']:,}",
                f"{s['teacher_latency_ms']:.3f}",
            ],
            [
                "student",
                *_fmt_return(s["student_return_mean"], s["student_return_std"], s["student_return_ci95"]),
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


def _cmd_distill_tasks(args: argparse.Namespace) -> None:
    from policykd.jobs.distill_tasks import TasksConfig, distill_tasks, parse_task

    if args.teachers or args.buffer:
        raise PolicyKDError("--task names each task's teacher (ENV=TEACHER); drop --teacher / --buffer")
    options = {k: v for k, v in _config_fields(args, TasksConfig).items() if v is not None}
    s = distill_tasks(TasksConfig(**{**options, "tasks": tuple(parse_task(t) for t in args.tasks)}))
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
    from policykd.jobs.config import CollectConfig
    from policykd.jobs.distill import collect

    config = CollectConfig(**_config_fields(args, CollectConfig))
    buffer, stats, teacher = collect(config)
    buffer.save(args.out)
    returns = stats.episode_returns
    mean = f"{sum(returns) / len(returns):.1f} over {len(returns)} episodes" if returns else "no finished episode"
    print(f"{len(buffer):,} transitions labelled by {teacher.describe()}; driver return {mean}; wrote {args.out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from policykd.fileio import read_json, write_json_atomic
    from policykd.jobs.evaluate import ReturnStats, episode_returns
    from policykd.jobs.resolve import resolve_student, resolve_teacher
    from policykd.learn.students import is_student_dir

    record = Path(args.source) / "expert.json"
    if args.record and not record.is_file():  # refused before playing, not after
        raise PolicyKDError(f"--record needs a zoo folder with expert.json; {args.source} has none")
    rng = np.random.default_rng(args.seed)
    policy: Any
    if args.source.endswith(".onnx"):
        from policykd.jobs.export import OnnxPolicy
        from policykd.jobs.resolve import playing_recipe

        if args.stochastic:
            raise PolicyKDError("an exported student acts greedily only; drop --stochastic")
        policy = OnnxPolicy(args.source)
        recipe = playing_recipe(policy.recipe, args.env_id, f"exported student {args.source}", policy.config)
        what = "exported student (onnxruntime)"
    elif is_student_dir(args.source):
        policy, recipe = resolve_student(args.source, args.env_id)
        what = f"student ({policy.n_params:,} params)"
    else:
        policy = resolve_teacher(args.source, args.env_id)
        recipe, what = policy.recipe, policy.describe()
    stats = ReturnStats.of(
        episode_returns(lambda o: policy.act(o, not args.stochastic, rng), recipe, args.episodes, seed=args.seed)
    )
    print(
        f"{what}: return {stats.mean:.2f} ± {stats.std:.2f}, 95 % CI [{stats.ci95[0]:.2f}, {stats.ci95[1]:.2f}] "
        f"over {stats.n_episodes} episodes (seed {args.seed})"
    )
    if args.record:
        data = read_json(record)
        data["score"] = {**stats.to_json(), "seed": args.seed, "deterministic": not args.stochastic}
        write_json_atomic(record, data)
        print(f"recorded in {record}")


def _cmd_export(args: argparse.Namespace) -> None:
    from policykd.jobs.export import export_onnx

    report = export_onnx(args.student, args.out or Path(args.student) / "policy.onnx")
    check = "identical actions" if report.max_abs_diff == 0 else f"actions within {report.max_abs_diff:.1g}"
    print(
        f"wrote {report.path} ({report.size_bytes / 1e3:.1f} kB, {report.n_params:,} params); "
        f"onnxruntime and the student agree on {report.n_checked} random observations ({check}); "
        f"batch-1 latency {report.latency_ms_onnx:.3f} ms onnxruntime vs {report.latency_ms_torch:.3f} ms torch"
    )


def _experiment_config(args: argparse.Namespace, config_cls: type, aliases: dict[str, str]) -> Any:
    """``config_cls`` from the --config file (if any) overridden by the options given."""
    from policykd.jobs.experiment import read_config_file

    values = read_config_file(args.config, config_cls, aliases) if args.config else {}
    fields = set(config_cls.__dataclass_fields__)
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in fields and v is not None}
    return config_cls(**{**values, **given})


def _run_experiment(
    args: argparse.Namespace,
    config_cls: type,
    aliases: dict[str, str],
    run: Callable[[Any], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
    files: str,
) -> None:
    """Run an experiment job (sweep, compare-drivers) on its config, print its Markdown report and
    the ``files`` it wrote into its output folder."""
    import time

    started = time.perf_counter()
    summary = run(_experiment_config(args, config_cls, aliases))
    print(markdown(summary))
    print(f"wrote {files} and tb/ into {summary['out_dir']} ({time.perf_counter() - started:.0f} s)")


def _cmd_sweep(args: argparse.Namespace) -> None:
    from policykd.jobs.sweep import SweepConfig, run_sweep, sweep_markdown

    files = "sweep.md, sweep.csv, runs.csv, sweep.png"
    _run_experiment(args, SweepConfig, SWEEP_ALIASES, run_sweep, sweep_markdown, files)


def _cmd_compare_drivers(args: argparse.Namespace) -> None:
    from policykd.jobs.drivers import DriversConfig, compare_drivers, drivers_markdown

    files = "drivers.md, drivers.csv, drivers.png"
    _run_experiment(args, DriversConfig, COMPARE_ALIASES, compare_drivers, drivers_markdown, files)


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


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.threads < 1:
            raise PolicyKDError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
        COMMANDS[args.command](args)
    except PolicyKDError as err:
        message = " ".join(str(err).split())  # one line, whatever the library put in the message
        print(f"policykd {args.command}: error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
