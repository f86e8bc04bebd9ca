"""Train every expert of the zoo, in order, resuming whatever an earlier session left unfinished.

    python agents/train_zoo.py                 # all experts, one after another
    python agents/train_zoo.py --only Pong     # those whose env id contains "Pong"

Each expert trains with `policykd.zoo.experts.train_expert` (rl_zoo3 hyperparameters, resume
checkpoints under <run>/resume/). Finished experts are skipped. Run it in the background; after a
session ends, run the same command again to continue.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from policykd.errors import PolicyKDError
from policykd.fileio import read_json
from policykd.zoo.experts import train_expert
from policykd.zoo.layout import RECORD_FILE, is_finished, run_dir_for
from policykd.zoo.scoring import measure_expert

ZOO_DIR = Path(__file__).resolve().parent

# (algo, env id, seed, timesteps or None for rl-zoo's budget, checkpoint every, eval episodes, run id:
# the folder is <algo>/<env id>_<run id>)
EXPERTS: list[tuple[str, str, int, int | None, int, int, int]] = [
    ("ppo", "CartPole-v1", 0, None, 20_000, 10, 1),
    ("dqn", "CartPole-v1", 1, None, 2_500, 10, 1),  # seed 0 peaked at 354 and collapsed
    ("qrdqn", "CartPole-v1", 0, None, 10_000, 10, 1),
    ("sac", "Pendulum-v1", 0, None, 5_000, 10, 1),
    ("td3", "Pendulum-v1", 0, None, 5_000, 10, 1),
    ("dqn", "Acrobot-v1", 0, None, 20_000, 10, 1),
    ("dqn", "LunarLander-v3", 0, None, 20_000, 10, 1),
    ("ppo", "LunarLander-v3", 0, None, 100_000, 10, 1),
    ("ppo", "LunarLander-v3", 1, None, 100_000, 10, 2),  # a second seed (run 2), for ensembles
    # More LunarLander teachers for ensembles. QR-DQN (256 gradient steps per 256 env steps) ran at
    # ~20 steps/s while other jobs shared the cores; rl-zoo's A2C recipe scored 18 ± 128 (seed 0) and
    # -62 ± 116 (seed 1) here and is not shipped.
    ("qrdqn", "LunarLander-v3", 0, None, 20_000, 10, 1),
    ("ppo", "HalfCheetah-v5", 0, None, 100_000, 5, 1),
    ("ppo", "PongNoFrameskip-v4", 0, 3_000_000, 100_000, 3, 1),
    ("td3", "Hopper-v5", 0, None, 50_000, 5, 1),
    # 60-95 steps/s on 2 threads; shipped at 1.9M of its 3M steps after five runs (agents/README.md)
    ("qrdqn", "PongNoFrameskip-v4", 0, 1_900_000, 100_000, 3, 1),
    # issue 22's second Atari game: rl-zoo's Atari PPO recipe, 3M of its 10M steps (as Pong);
    # ~190 steps/s on 2 cores, so it trains across sessions from resume/ (or in minutes on a GPU)
    ("ppo", "BreakoutNoFrameskip-v4", 0, 3_000_000, 50_000, 3, 1),
    # issue 18's continuous-action Box2D expert for small_data.py: a Gaussian PPO, rl-zoo's recipe
    ("ppo", "LunarLanderContinuous-v3", 0, None, 100_000, 10, 1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="train only experts whose '<algo> <env id>' contains this")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training (default 1)")
    parser.add_argument(
        "--device", default="cpu", help="torch device: cpu (default), cuda or auto (a GPU pays off for Atari)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for algo, env_id, seed, n_timesteps, every, n_eval, run_id in EXPERTS:
        name = f"{algo} {env_id}" + (f"_{run_id}" if run_id != 1 else "")
        if args.only and args.only not in name:
            continue
        if is_finished(run_dir_for(ZOO_DIR, algo, env_id, run_id)):
            print(f"skip {name}: finished")
            continue
        print(f"train {name}", flush=True)
        try:
            run_dir = train_expert(
                algo,
                env_id,
                zoo_dir=ZOO_DIR,
                seed=seed,
                n_timesteps=n_timesteps,
                checkpoint_every=every,
                n_eval_episodes=n_eval,
                run_id=run_id,
                progress_bar=False,
                device=args.device,
            )
            # scored while choosing between the best and final checkpoints, else measured now
            # (30 episodes, seed 0); either way recorded in expert.json
            score = read_json(run_dir / RECORD_FILE).get("score") or measure_expert(run_dir)
            print(f"{name}: {score['mean']:.1f} ± {score['std']:.1f}", flush=True)
        except PolicyKDError as err:
            print(f"error: {err}", file=sys.stderr)


if __name__ == "__main__":
    main()
