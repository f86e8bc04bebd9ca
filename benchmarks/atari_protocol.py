"""The Atari protocol notes of `benchmarks/atari.py` (issue 22), checked on the envs policykd builds
each time the benchmark runs: the wrappers against what rl-zoo's AtariWrapper recipe (the expert's
`config.yml`) asks for, whether an evaluation episode is a whole game, whether two policies start
their episodes from the same frames on the same env seeds, and how teacher, student and the
collecting teacher act. Cheap: a few random games and 16 collected transitions per expert."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from policykd.data.envs import EnvRecipe, make_vec_env, read_zoo_yaml, recipe_from_zoo_config
from policykd.data.teachers import load_teacher
from policykd.jobs.collect import collect
from policykd.jobs.config import CollectConfig, DistillConfig
from policykd.jobs.evaluate import EVAL_SEED_OFFSET
from policykd.jobs.resolve import resolve_budgets
from policykd.zoo.presets import ZOO_DIR

Q_KINDS = ("q_values", "quantiles")
N_COLLECTED = 64  # transitions collected to see how the teacher drives


def zoo_recipe(folder: Path) -> EnvRecipe:
    """The env recipe of a zoo folder, from its ``config.yml`` alone (an expert still training has no model yet)."""
    env_id = folder.name.rsplit("_", 1)[0]
    return recipe_from_zoo_config(env_id, read_zoo_yaml(folder / env_id / "config.yml"))


def wrapper_chain(recipe: EnvRecipe) -> tuple[list[Any], Any]:
    """The wrappers of env 0 that ``make_vec_env`` builds, outermost first, and the bare ALE env."""
    venv = make_vec_env(recipe, 1, EVAL_SEED_OFFSET)
    env, chain = venv.unwrapped.envs[0], []
    while hasattr(env, "env"):
        chain.append(env)
        env = env.env
    venv.close()
    return chain, env


def atari_wrapper_asks(recipe: EnvRecipe) -> dict[str, Any]:
    """AtariWrapper's settings as the recipe asks for them: its defaults, updated by the recipe's kwargs."""
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    asked = {
        k: p.default for k, p in inspect.signature(AtariWrapper.__init__).parameters.items() if k not in ("self", "env")
    }
    for entry in recipe.env_wrapper if isinstance(recipe.env_wrapper, list) else [recipe.env_wrapper]:
        if isinstance(entry, dict) and str(next(iter(entry))).endswith("AtariWrapper"):
            asked.update(next(iter(entry.values())) or {})
    return asked


def built_settings(recipe: EnvRecipe) -> tuple[dict[str, Any], list[str], bool]:
    """What the built env does, in AtariWrapper's terms; the chain's names; whether Monitor (the
    evaluation's returns) sits below the life-loss wrapper (so it sees whole games)."""
    chain, ale = wrapper_chain(recipe)
    names = [type(w).__name__ for w in chain]
    by_name = {type(w).__name__: w for w in chain}
    settings = {
        "noop_max": getattr(by_name.get("NoopResetEnv"), "noop_max", 0),
        "frame_skip": getattr(by_name.get("MaxAndSkipEnv"), "_skip", 1),
        "screen_size": getattr(by_name.get("WarpFrame"), "width", None),
        "terminal_on_life_loss": "EpisodicLifeEnv" in by_name,
        "clip_reward": "ClipRewardEnv" in by_name,
        "action_repeat_probability": getattr(by_name.get("StickyActionEnv"), "action_repeat_probability", 0.0),
    }
    settings["ale repeat_action_probability"] = float(ale.ale.getFloat("repeat_action_probability"))
    settings["ale frameskip"] = ale.spec.kwargs.get("frameskip")
    settings["FIRE on reset"] = "FireResetEnv" in by_name
    life = names.index("EpisodicLifeEnv") if "EpisodicLifeEnv" in names else -1
    return settings, names, "Monitor" in names and names.index("Monitor") > life


def play_games(recipe: EnvRecipe, rng_seed: int, n_games: int = 2) -> dict[str, Any]:
    """A uniformly random policy for ``n_games`` Monitor episodes on one env seeded as evaluation's
    env 0: each game's first frame, return (Monitor: raw score), clipped reward sum, and the
    episode ends the vector env signalled in it (life losses included)."""
    venv = make_vec_env(recipe, 1, EVAL_SEED_OFFSET)
    rng = np.random.default_rng(rng_seed)
    obs = venv.reset()
    starts, returns, clipped, ends, lives = [obs[0].copy()], [], [], [], venv.unwrapped.envs[0].unwrapped.ale.lives()
    running, n_dones = 0.0, 0
    while len(returns) < n_games:
        obs, reward, done, infos = venv.step(rng.integers(0, venv.action_space.n, size=1))
        running, n_dones = running + float(reward[0]), n_dones + int(done[0])
        if "episode" in infos[0]:
            returns.append(float(infos[0]["episode"]["r"]))
            clipped.append(running)
            ends.append(n_dones)
            running, n_dones = 0.0, 0
            starts.append(obs[0].copy())
    venv.close()
    return {"starts": starts[:n_games], "returns": returns, "clipped": clipped, "ends": ends, "lives": lives}


def env_notes(env_id: str, recipe: EnvRecipe) -> list[str]:
    asked = atari_wrapper_asks(recipe)
    built, names, monitor_below = built_settings(recipe)
    differ = [k for k in asked if k in built and built[k] != asked[k]]
    one, other = play_games(recipe, 1), play_games(recipe, 2)
    same_starts = all(np.array_equal(a, b) for a, b in zip(one["starts"], other["starts"]))
    return [
        f"- **{env_id}** (recipe from `config.yml`: `{recipe.env_wrapper}`, frame stack {recipe.frame_stack}). "
        f"Built wrappers, outermost first: {' → '.join(names)}.",
        "  - AtariWrapper settings the recipe asks for (its defaults, as rl-zoo trained the expert) and the built "
        f"env: {', '.join(f'{k} {asked[k]}' for k in asked)}; "
        + ("all match" if not differ else f"**differ: {', '.join(f'{k} built {built[k]}' for k in differ)}**")
        + f". ALE: repeat_action_probability {built['ale repeat_action_probability']:g} (no sticky actions, as "
        f"`NoFrameskip-v4` trains), frameskip {built['ale frameskip']} (AtariWrapper skips {built['frame_skip']}); "
        f"FIRE on reset: {'yes' if built['FIRE on reset'] else 'no'} (FireResetEnv, outside the life-loss wrapper, "
        "so FIRE is pressed after each life loss too).",
        f"  - Evaluation episodes are whole games: Monitor sits {'below' if monitor_below else '**above**'} the "
        f"life-loss wrapper. Two random games from {one['lives']} lives: "
        + "; ".join(
            f"Monitor return {r:g} (raw score; clipped rewards sum {c:g}) over {e} env episode end(s)"
            for r, c, e in zip(one["returns"], one["clipped"], one["ends"])
        )  # fmt: skip
        + ". Collection and evaluation build this same env from the same recipe.",
        f"  - Same episode seeds: two policies (different random streams) start games 1 and 2 of env 0 from "
        f"{'the same frames' if same_starts else '**different frames**'}: the noop count is drawn from the env's "
        "own generator, seeded once per env (seed + i), so teacher, student and random policy play the same starts.",
    ]


def acting_notes(name: str, folder: Path) -> list[str]:
    """How the expert acts when scored, when it drives collection, and how its student acts."""
    from rl_zoo3.exp_manager import ExperimentManager

    teacher = load_teacher(folder)
    source = str(folder.relative_to(ZOO_DIR.parent))
    greedy = resolve_budgets(teacher.recipe.env_id, DistillConfig(teacher=source), teacher=teacher).deterministic_eval
    config = CollectConfig(teacher=source, n_transitions=N_COLLECTED, n_envs=2, epsilon=0.0, teacher_check=False,
                           progress_bar=False)  # fmt: skip
    buffer, _, _ = collect(config)
    labels = buffer.column("teacher_logits" if teacher.kind == "categorical" else "teacher_q_values")[:, 0]
    off_argmax = float(np.mean(buffer.column("actions") != labels.argmax(axis=1)))
    zoo_stochastic = ExperimentManager.is_atari(teacher.recipe.env_id)
    line = (
        f"- **`{name}`** ({teacher.kind}): evaluation {'greedy' if greedy else 'sampled'} for teacher, student and "
        f"random policy alike (rl-zoo scores Atari {'stochastically' if zoo_stochastic else 'greedily'}); "
        f"collection: the teacher drives `{buffer.meta.get('teacher_acts', 'greedy')}` "
        f"({100 * off_argmax:.0f} % of {N_COLLECTED} collected actions off its argmax, ε = 0 here"
        + (
            "; a Q-learner's policy is its argmax, and collection's ε-greedy (the preset's 0.01) plays the part "
            "of its saved exploration rate)."
            if teacher.kind in Q_KINDS
            else ")."
        )
    )
    if teacher.kind in Q_KINDS:
        line += (
            f" Sampled, the teacher acts ε-greedily with its saved exploration rate {teacher.exploration_rate:g} "
            "(SB3's predict), and so does its student (`--student-sampling teacher`, the default: the student "
            "folder keeps the rate, `StudentConfig.exploration_rate`); `--student-sampling distribution` samples "
            "the student's softened distribution (softmax of Q / τ) instead, a noisier player than its teacher."
        )
    return [line]


def protocol_notes(folders: list[Path], experts: list[tuple[str, Path]]) -> str:
    """The notes section: each game of the zoo folders ``folders`` (finished or not: these checks
    need only ``config.yml``), and how each of ``experts`` (``(name, folder)``, finished) acts."""
    lines = ["## Protocol notes (checked on the built envs by this run)", "", "Per game:", ""]
    recipes = {recipe.env_id: recipe for recipe in map(zoo_recipe, folders)}
    for env_id, recipe in sorted(recipes.items()):
        lines += env_notes(env_id, recipe)
    lines += ["", "Per expert run:", ""]
    lines += [line for name, folder in experts for line in acting_notes(name, folder)]
    return "\n".join(lines + ["", CHANGED]) + "\n"


CHANGED = """\
Changed after this audit (issue 22): before it, collection drove the teacher by its argmax while the
teacher was trained, scored and compared sampling its policy (on Atari), so the buffer held the
states of a player nobody evaluates; `policykd.jobs.collect` now drives with the run's evaluation
mode (`teacher_acts` in the buffer's header). Cells cached before that change were collected greedily.
Later, a Q-value / quantile teacher's student evaluated by sampling its softmax while its teacher
acted ε-greedily; it now acts ε-greedily at the teacher's rate (summary.json's `sampled_actions`).
Cells cached before that change sampled the student's softmax."""
