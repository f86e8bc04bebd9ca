"""``policykd`` command line: parse, call the library, print. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
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
    p.add_argument("--teacher", help="rl-zoo folder, SB3 .zip or hub id (default: the env preset's expert)")
    p.add_argument("--env", dest="env_id", help="env id (default: the teacher's, else CartPole-v1)")
    p.add_argument("--n-transitions", type=int, help="labelled transitions to collect (default: preset)")
    p.add_argument("--n-envs", type=int, help="vectorised envs while collecting (default: preset)")
    p.add_argument("--epsilon", type=float, help="epsilon-greedy exploration for discrete actions")
    p.add_argument("--action-noise", type=float, help="Gaussian action noise, fraction of the half action range")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-teacher-check", dest="teacher_check", action="store_false",
                   help="skip refusing a teacher that plays far below its recorded score")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="policykd", description="Distil Stable-Baselines3 experts into small students.")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: small MLPs run fastest on one; raise it for CNNs)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="teacher-driven rollouts -> labelled buffer (.npz)")
    _add_collect_args(p)
    p.add_argument("--out", required=True, help="buffer file to write (.npz)")

    p = sub.add_parser("distill", help="train a student (collecting first, or from --buffer)", epilog=DISTILL_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _add_collect_args(p)
    p.add_argument("--buffer", help="train from this saved buffer instead of collecting")
    p.add_argument("--loss", default="kl", help="kl | nll | mse (default kl)")
    p.add_argument("--temperature", type=float, default=1.0, help="tau: softmax(x/tau) or std*tau (default 1)")
    p.add_argument("--temperature-on", default="teacher", help="teacher | both (default teacher)")
    p.add_argument("--kl-direction", default="forward", help="forward = KL(teacher||student) | reverse")
    p.add_argument("--tau2-scaling", action="store_true", help="multiply the KL by tau^2 (Hinton)")
    p.add_argument("--no-q-center", dest="center_q", action="store_false",
                   help="mse on raw Q-values instead of Q minus its mean over actions")  # fmt: skip
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
    p.add_argument("source", help="student run folder (…/student), rl-zoo folder, SB3 .zip or hub id")
    p.add_argument("--env", dest="env_id")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of acting greedily")
    p.add_argument("--record", action="store_true", help="write the score into the zoo folder's expert.json")

    sub.add_parser("zoo", help="list the shipped experts and their recorded scores")

    p = sub.add_parser("train-expert", help="train (or resume) an rl-zoo expert into agents/")
    p.add_argument("--algo", required=True)
    p.add_argument("--env", dest="env_id", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-timesteps", type=int, help="default: rl-zoo's budget")
    p.add_argument("--checkpoint-every", type=int, default=50_000)
    p.add_argument("--run-id", type=int, default=1, help="run folder <algo>/<EnvId>_<run-id> (default 1)")
    p.add_argument("--zoo-dir", default=None, help="default: the repository's agents/")
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


def _cmd_distill(args: argparse.Namespace) -> None:
    from policykd.pipeline import DistillConfig, distill

    fields = {f for f in DistillConfig.__dataclass_fields__}
    config = DistillConfig(**{k: v for k, v in vars(args).items() if k in fields})
    s = distill(config)
    print(f"\n{s['env_id']}: {s['teacher_algo']} teacher -> student, loss {s['loss']}, tau {s['temperature']:g}, "
          f"{s['n_teacher_transitions']:,} teacher transitions, {s['n_updates']:,} updates, {s['n_eval_episodes']} eval episodes")  # fmt: skip
    _print_table(
        [
            ["teacher", *_fmt_return(s["teacher_return_mean"], s["teacher_return_std"], s["teacher_return_ci95"]), "100.0",
             f"{s['teacher_params']:,}", f"{s['teacher_latency_ms']:.3f}"],
            ["student", *_fmt_return(s["student_return_mean"], s["student_return_std"], s["student_return_ci95"]),
             f"{s['pct_of_teacher']:.1f}", f"{s['student_params']:,} ({100 * s['param_fraction']:.0f} %)",
             f"{s['student_latency_ms']:.3f}"],
        ],  # fmt: skip
        ["policy", "return (mean ± std)", "95 % CI", "% of teacher", "params", "latency (ms)"],
    )
    print(f"% of teacher: (student - random) / (teacher - random), random policy {s['random_return_mean']:.1f}; "
          f"raw student / teacher {s['pct_of_teacher_raw']:.1f} %")
    print(f"run folder: {s['out_dir']} (summary.json, student/, tb/), {s['wall_time_s']:.0f} s")


def _cmd_collect(args: argparse.Namespace) -> None:
    from policykd.pipeline import CollectConfig, collect

    fields = {f for f in CollectConfig.__dataclass_fields__}
    config = CollectConfig(**{k: v for k, v in vars(args).items() if k in fields})
    buffer, stats, teacher = collect(config)
    buffer.save(args.out)
    returns = stats.episode_returns
    mean = f"{sum(returns) / len(returns):.1f} over {len(returns)} episodes" if returns else "no finished episode"
    print(f"{len(buffer):,} transitions labelled by {teacher.describe()}; driver return {mean}; wrote {args.out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from policykd.evaluation import ReturnStats, episode_returns
    from policykd.fileio import read_json, write_json_atomic
    from policykd.pipeline import resolve_student, resolve_teacher
    from policykd.students import is_student_dir

    record = Path(args.source) / "expert.json"
    if args.record and not record.is_file():  # refused before playing, not after
        raise PolicyKDError(f"--record needs a zoo folder with expert.json; {args.source} has none")
    rng = np.random.default_rng(args.seed)
    policy: Any
    if is_student_dir(args.source):
        policy, recipe = resolve_student(args.source, args.env_id)
        what = f"student ({policy.n_params:,} params)"
    else:
        policy = resolve_teacher(args.source, args.env_id)
        recipe, what = policy.recipe, policy.describe()
    stats = ReturnStats.of(
        episode_returns(lambda o: policy.act(o, not args.stochastic, rng), recipe, args.episodes, seed=args.seed)
    )
    print(f"{what}: return {stats.mean:.2f} ± {stats.std:.2f}, 95 % CI [{stats.ci95[0]:.2f}, {stats.ci95[1]:.2f}] "
          f"over {stats.n_episodes} episodes (seed {args.seed})")  # fmt: skip
    if args.record:
        data = read_json(record)
        data["score"] = {**stats.to_json(), "seed": args.seed, "deterministic": not args.stochastic}
        write_json_atomic(record, data)
        print(f"recorded in {record}")


def _cmd_zoo(_: argparse.Namespace) -> None:
    from policykd.zoo import list_experts

    rows = [
        [e["algo"], e["env_id"], e["score"], e["reference"], e["timesteps"], e["size"], e["status"]]
        for e in list_experts()
    ]  # fmt: skip
    _print_table(rows, ["algo", "env", "score (mean ± std)", "rl-zoo reference", "timesteps", "size", "status"])


def _cmd_train_expert(args: argparse.Namespace) -> None:
    from policykd.experts import train_expert
    from policykd.presets import ZOO_DIR

    run_dir = train_expert(
        args.algo, args.env_id, zoo_dir=args.zoo_dir or ZOO_DIR, seed=args.seed,
        n_timesteps=args.n_timesteps, checkpoint_every=args.checkpoint_every, run_id=args.run_id,
    )  # fmt: skip
    print(f"expert written to {run_dir}; measure it with: policykd evaluate {run_dir} --episodes 30 --record")


COMMANDS = {
    "distill": _cmd_distill,
    "collect": _cmd_collect,
    "evaluate": _cmd_evaluate,
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
