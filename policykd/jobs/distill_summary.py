"""What a distill run reports: ``summary.json``'s keys, for one task (K teachers) or several."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from policykd.jobs.evaluate import ReturnStats, action_latency_ms, pct_of, raw_pct_of

if TYPE_CHECKING:  # annotations only: distill imports this module
    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import Baselines, TaskPlan


def defaults_line(plan: TaskPlan) -> str | None:
    """Which defaults were derived (not read from a preset or given) and why: one line, or None."""
    episodes = ""
    if plan.budgets.max_eval_episodes:
        episodes = f"{plan.budgets.n_eval_episodes} evaluation episodes (from the teacher's return variance)"
    parts = (plan.budgets.picked, episodes, plan.loss_why, plan.temperature_why, plan.sampling_why)
    parts = [part for part in parts if part]
    return "; ".join(parts) or None


Q_KINDS = ("q_values", "quantiles")


def sampled_actions(epsilon: float | None, kind: str) -> dict[str, Any]:
    """How a policy of ``kind`` (a teacher's or a student head's) acts when evaluated stochastically:
    epsilon-greedy at ``epsilon`` where it is given, else greedy (deterministic) or sampled from its distribution."""
    if epsilon is not None:
        return {"rule": "epsilon-greedy", "epsilon": epsilon}
    return {"rule": "greedy" if kind == "deterministic" else "distribution"}


def single_task_summary(
    config: DistillConfig,
    plan: TaskPlan,
    baselines: Baselines,
    student: Any,
    student_stats: ReturnStats,
    trainer: Any,
    train_metrics: dict[str, float],
) -> dict[str, Any]:
    teachers, teacher_stats, best = plan.teachers, baselines.teacher, baselines.best
    assert plan.buffer is not None
    example_obs = plan.buffer.batch_at(np.arange(1)).observations.numpy()[0]
    teacher_params = sum(t.n_params for t in teachers)
    return {
        "env_id": plan.name,
        "teacher": teachers[best].source,
        "teacher_algo": teachers[best].algo,
        "teacher_kind": plan.kind,
        "teachers": [
            {"source": t.source, "algo": t.algo, "kind": t.kind, "params": t.n_params, **stats.to_json()}
            for t, stats in zip(teachers, baselines.each_teacher)
        ],
        "merge": None if len(teachers) == 1 else (config.merge or "mean-probs"),
        "teacher_weights": list(config.teacher_weights) if config.teacher_weights else None,
        "loss": plan.loss,
        "temperature": plan.temperature,
        "temperature_on": config.temperature_on,
        "kl_direction": config.kl_direction,
        "hard_label_weight": config.hard_label_weight,
        "label_smoothing": config.label_smoothing,
        "defaults": defaults_line(plan),
        **_stats_keys("teacher", teacher_stats),
        **_stats_keys("student", student_stats),
        "random_return_mean": baselines.random.mean,
        "pct_of_teacher": pct_of(student_stats.mean, teacher_stats.mean, baselines.random.mean),
        # null where any return seen is negative: a ratio of means is a fraction only for returns >= 0
        "pct_of_teacher_raw": raw_pct_of(student_stats, teacher_stats, baselines.random),
        "n_eval_episodes": plan.budgets.n_eval_episodes,
        "eval_actions": "greedy" if plan.budgets.deterministic_eval else "sampled",
        "sampled_actions": {
            "teacher": sampled_actions(teachers[0].exploration_rate if plan.kind in Q_KINDS else None, plan.kind),
            "student": sampled_actions(student.config.exploration_rate, student.config.head),
        },
        "teacher_params": teacher_params,
        "student_params": student.n_params,
        "param_fraction": student.n_params / teacher_params,
        "teacher_latency_ms": action_latency_ms(lambda o: plan.teacher.act(o), example_obs),
        "student_latency_ms": action_latency_ms(lambda o: student.act(o), example_obs),
        "n_teacher_transitions": len(plan.buffer),
        "n_updates": trainer.n_updates_done,
        "frame_stacks": trainer.frame_stacks.get(None),  # where Atari stacks were rebuilt (host or GPU), and why
        "hidden_sizes": list(student.config.hidden_sizes),
        "final_train_metrics": {k: v for k, v in train_metrics.items() if not k.startswith("eval/")},
    }


def multitask_summary(
    config: DistillConfig,
    plans: list[TaskPlan],
    baselines: list[Baselines],
    student: Any,
    results: dict[str, ReturnStats],
    train_metrics: dict[str, float],
) -> dict[str, Any]:
    rows = {}
    for plan, base in zip(plans, baselines):
        stats = results[plan.name]
        rows[plan.name] = {
            "teacher": base.teacher.to_json() | {"source": plan.teacher.source, "algo": plan.teacher.algo},
            "random_return_mean": base.random.mean,
            "student": stats.to_json(),
            "pct_of_teacher": pct_of(stats.mean, base.teacher.mean, base.random.mean),
            "teacher_params": plan.teacher.n_params,
            "loss": plan.loss,
            "temperature": plan.temperature,
            "defaults": defaults_line(plan),
        }
    return {
        "tasks": rows,
        "overall_pct_of_teacher": float(np.mean([r["pct_of_teacher"] for r in rows.values()])),
        "min_pct_of_teacher": float(min(r["pct_of_teacher"] for r in rows.values())),
        "student_params": student.n_params,
        "sum_teacher_params": sum(r["teacher_params"] for r in rows.values()),
        "loss": plans[0].loss if len({p.loss for p in plans}) == 1 else None,
        "temperature": plans[0].temperature if len({p.temperature for p in plans}) == 1 else None,
        "task_weights": list(config.task_weights) if config.task_weights else None,
        "n_updates": plans[0].budgets.n_updates,
        "final_train_metrics": train_metrics,
    }


def _stats_keys(who: str, stats: ReturnStats) -> dict[str, Any]:
    return {f"{who}_return_mean": stats.mean, f"{who}_return_std": stats.std, f"{who}_return_ci95": list(stats.ci95)}
