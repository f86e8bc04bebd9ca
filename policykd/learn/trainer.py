"""The one owner of the optimizer and the step counter, for one task or several. A training step
reads top to bottom: sample -> soften each teacher at tau -> merge -> student forward -> loss ->
Adam step.

One task: a ``LabelledBuffer`` (one DistillBatch per step), one loss, a ``Student``. Several
tasks: a ``MultiTaskSampler`` (one DistillBatch per task, rows in proportion to the task weights),
a loss (and optionally a merge) per task, a ``MultiTaskStudent`` called as ``student(obs, task)``.
The step minimises ``sum_t (n_t / B) loss_t``, the mean over all B rows of the step, so task
weights act through the row counts n_t; with one task that is the loss itself.

Nothing here draws from torch's global RNG (no dropout, no sampling: batches come from the numpy
generator seeded ``TrainerConfig.seed``), so training does not seed or advance it; a student's
initial weights come from ``make_student(..., seed=...)``.

Checkpoints (given a ``checkpoint_path``): one safetensors file holding the student, the Adam state,
the sampling generator's state, the update counters, the last metrics and evaluation, and the
caller's ``progress``, written atomically every ``checkpoint_every_s`` seconds, before and after
each evaluation, at the end and when training is interrupted (:meth:`Trainer.interrupt`). A Trainer
built the same way and :meth:`Trainer.restore`-d from it continues bitwise as if never stopped (on
CPU, with the same thread count).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from policykd.checks import check_int, check_positive_float
from policykd.data.actions import masked_output
from policykd.data.buffers import LabelledBuffer
from policykd.data.device_frames import place_frame_stacks
from policykd.errors import PolicyKDError
from policykd.fileio import atomic_path
from policykd.learn.logging import MetricLogger, NullLogger
from policykd.learn.merging import per_teacher_kl, single_teacher, teacher_disagreement, teacher_names
from policykd.learn.metrics import distill_metrics
from policykd.learn.multitask import MultiTaskSampler, check_tasks
from policykd.learn.students import state_dict_bytes
from policykd.learn.targets import check_temperature, soften, with_masks_applied
from policykd.progress import progress_bar
from policykd.types import DistillBatch, DistillTarget, EvalFn, LossFn, LossOutput, MergeFn, Sampler, StudentOutput

Task = str | None  # a task's name; None in single-task training (``student(obs)``, no ``tasks/`` prefix)
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "policykd.trainer_checkpoint", 1


class TaskStep(NamedTuple):
    """One task's part of a gradient step."""

    loss_out: LossOutput  # the task's loss (differentiable) and its detached metrics
    student_out: StudentOutput  # (n_t, A) logits, or (n_t, D) mean / log-std / action
    target: DistillTarget  # the merged teachers at tau
    batch: DistillBatch  # the task's n_t rows


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    n_updates: int = 2_000
    """Gradient steps."""
    batch_size: int = 256
    """Transitions per gradient step, sampled uniformly with replacement."""
    learning_rate: float = 1e-3
    """Adam step size."""
    temperature: float | None = None
    """Applied to each teacher's raw output before merging (see targets.soften). None: the
    loss's own temperature (KLLoss), else 1. Set both and they must agree."""
    max_grad_norm: float | None = 10.0
    """Gradient clipping; None to disable."""
    log_every: int = 100
    """Updates between metric logs (losses, entropies and their gap, the buffer's driver shares)."""
    eval_every: int = 0
    """Updates between evaluations (0: only after the last update)."""
    seed: int = 0
    """Seeds the numpy generator the batches are sampled with (the only randomness in training)."""
    progress_bar: bool = True
    checkpoint_every_s: float = 30.0
    """Seconds between checkpoints (with a ``checkpoint_path``); 0: after every update. Checkpoints
    are also written around each evaluation, at the end and on :meth:`Trainer.interrupt`."""
    device: str = "cpu"
    """Where the student trains and batches are sampled to (``policykd.devices.resolve_device``
    names it). On the CPU the loss is checked for NaN after every update; on a GPU, where that check
    would wait for the device every update, at each log step, evaluation and checkpoint."""

    def __post_init__(self) -> None:
        for name, minimum in (("n_updates", 1), ("batch_size", 1), ("log_every", 1), ("eval_every", 0)):
            check_int(name, getattr(self, name), minimum)
        check_positive_float("learning_rate", self.learning_rate)
        if not self.checkpoint_every_s >= 0:  # `not >=` also refuses NaN
            raise PolicyKDError(f"checkpoint_every_s must be >= 0 seconds, got {self.checkpoint_every_s!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise PolicyKDError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.temperature is not None:
            check_temperature(self.temperature)


class Trainer:
    """Owns the optimiser (Adam), gradient clipping, the update counter, logging, evaluation and
    checkpoints, for one task or several (see the module docstring).

    ``sampler``: a ``LabelledBuffer`` or a ``MultiTaskSampler``. ``loss_fn`` and ``merge``: one
    for every task, or (several tasks) a mapping task -> loss / merge; a task without a merge gets
    ``single_teacher``. Each task's teachers are softened at its tau: ``config.temperature``, else
    its loss's, else 1 (set both and they must agree)."""

    def __init__(
        self,
        student: torch.nn.Module,
        loss_fn: LossFn | Mapping[str, LossFn],
        sampler: Sampler,
        *,
        config: TrainerConfig,
        merge: MergeFn | Mapping[str, MergeFn] = single_teacher,
        logger: MetricLogger | None = None,
        evaluate: EvalFn | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_path: str | Path | None = None,
        progress: dict[str, Any] | None = None,
    ) -> None:
        """``checkpoint_dir``: the student is saved there (``student.save``) after each evaluation
        and at the end. ``checkpoint_path``: the file of the training checkpoints (module
        docstring). ``progress``: a JSON-able dict the caller keeps its own progress in (e.g. its
        evaluation results), saved with each checkpoint and refilled in place by :meth:`restore`."""
        self.student, self.sampler, self.config = student, sampler, config
        self.loss_fns, self.merges = _per_task(student, sampler, loss_fn, merge)
        self.temperatures = {
            task: resolve_temperature(config.temperature, loss, task) for task, loss in self.loss_fns.items()
        }
        self.logger, self.evaluate = logger or NullLogger(), evaluate
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.progress = progress if progress is not None else {}
        self.device = torch.device(config.device)
        student.to(self.device)  # before the optimiser, which keeps its state beside the parameters
        self.frame_stacks = _place_frame_stacks(sampler, self.device)  # task -> where its stacks are rebuilt, why
        self._finite = _FiniteWatch(self.device)
        self.optimizer = torch.optim.Adam(student.parameters(), lr=config.learning_rate)
        self.rng = np.random.default_rng(config.seed)
        self.n_updates_done = 0
        self.round_updates = 0  # updates of the train() call in progress (a restored one continues it)
        self.last_eval: dict[str, float] = {}
        self.last_metrics: dict[str, float] = {}  # the last training metrics logged
        self.evaluated_at: int | None = None  # n_updates_done of the last evaluation
        self.logged_now: dict[str, float] = {}  # everything logged at step n_updates_done
        self._in_update = self._stop_requested = False
        self._last_checkpoint = time.monotonic()

    @property
    def multitask(self) -> bool:
        """Whether the sampler is a MultiTaskSampler (tasks named, student called with the task)."""
        return None not in self.loss_fns

    @property
    def temperature(self) -> float:
        """The tau the teachers are softened at (read ``temperatures`` when tasks differ)."""
        taus = set(self.temperatures.values())
        if len(taus) > 1:
            raise PolicyKDError(f"the tasks are softened at different temperatures {self.temperatures}")
        return taus.pop()

    def step(self) -> tuple[torch.Tensor, dict[Task, TaskStep]]:
        """One gradient step. Returns the loss minimised (a scalar) and each task's part of the step."""
        steps: dict[Task, TaskStep] = {}
        for task, batch in self._sample().items():
            batch = with_masks_applied(batch)  # MaskablePPO: forbidden actions' logits -> INVALID_LOGIT, both sides
            target = self.merges[task]([soften(out, self.temperatures[task]) for out in batch.teacher_outputs])
            student_out = masked_output(self._forward(batch.observations, task), batch.action_masks)
            steps[task] = TaskStep(self.loss_fns[task](student_out, target), student_out, target, batch)
        # the mean over all B rows: each task's mean loss weighs n_t / B (one task: the loss itself)
        loss = sum(s.loss_out.loss * (len(s.batch.observations) / self.config.batch_size) for s in steps.values())
        self._finite.watch("the loss", loss, self.n_updates_done + 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.config.max_grad_norm)
            self._finite.watch("the gradient norm", norm, self.n_updates_done + 1)
        self.optimizer.step()
        self.n_updates_done += 1
        return loss, steps

    def train(self) -> dict[str, float]:
        """Run ``n_updates`` steps with periodic logging, evaluation and checkpoints.
        Returns the last logged metrics merged with the last evaluation.

        Calling it again continues training (the online loop does, once per round): the optimizer
        state carries over and metrics are logged at the global update count ``n_updates_done``.
        After :meth:`restore`, it finishes the call the checkpoint was taken in (an evaluation
        the interruption cut short first)."""
        cfg = self.config
        self.student.train()
        started = time.perf_counter()
        bar = progress_bar(
            cfg.n_updates, "distil", enabled=cfg.progress_bar, unit="updates", initial=self.round_updates
        )
        try:
            if self._evaluation_due(self.round_updates) and self.evaluated_at != self.n_updates_done:
                self.run_evaluation(self.n_updates_done)
            self._run_updates(bar)
        except KeyboardInterrupt:
            if not self._in_update:  # between two updates the state is whole: keep it
                self.save_checkpoint()
            raise
        finally:
            bar.close()
            self._in_update = self._stop_requested = False
        self.student.eval()
        if self.checkpoint_dir is not None:
            self.student.save(self.checkpoint_dir)
        self.save_checkpoint()
        self.round_updates = 0
        return {**self.last_metrics, "train/wall_time_s": time.perf_counter() - started, **self.last_eval}

    def _run_updates(self, bar: Any) -> None:
        """The updates left in this train() call: step, log, evaluate, checkpoint."""
        cfg = self.config
        window_start, window_steps = time.perf_counter(), 0
        while self.round_updates < cfg.n_updates:
            # interrupt() waits for the end of the update and of its logging: a KeyboardInterrupt
            # raised inside the TensorBoard writer could leave its lock held, and closing it then hangs
            self._in_update = True
            loss, steps = self.step()
            self.round_updates += 1
            self.logged_now = {}
            update, window_steps = self.round_updates, window_steps + 1
            if update % cfg.log_every == 0 or update == cfg.n_updates:
                self._finite.check()
                sps = window_steps * cfg.batch_size / max(time.perf_counter() - window_start, 1e-9)
                self.last_metrics = {**self.step_metrics(loss, steps), "charts/SPS": sps}
                self._log(self.last_metrics)
                bar.set_postfix(loss=f"{self.last_metrics['losses/distill']:.4f}")
                window_start, window_steps = time.perf_counter(), 0
            self._in_update = False
            if self._stop_requested:
                raise KeyboardInterrupt
            if self._evaluation_due(update):
                self.run_evaluation(self.n_updates_done)
            elif time.monotonic() - self._last_checkpoint >= cfg.checkpoint_every_s:
                self.save_checkpoint()
            bar.update(1)

    def _evaluation_due(self, update: int) -> bool:
        """Whether this train() call evaluates after its ``update``-th update."""
        every = self.config.eval_every
        return (
            self.evaluate is not None
            and update > 0
            and (update == self.config.n_updates or (every > 0 and update % every == 0))
        )

    def _log(self, metrics: dict[str, float]) -> None:
        """Log at step ``n_updates_done``, remembering it for a checkpoint (see :meth:`restore`)."""
        self.logger.log(metrics, self.n_updates_done)
        self.logged_now.update(metrics)

    def interrupt(self) -> None:
        """Stop training where its state is whole, for a SIGINT / SIGTERM handler: outside an
        update, at once (KeyboardInterrupt); inside one, once it is done. :meth:`train` writes a
        checkpoint before the KeyboardInterrupt leaves it."""
        if self._in_update:
            self._stop_requested = True
        else:
            raise KeyboardInterrupt

    def step_metrics(self, loss: torch.Tensor, steps: dict[Task, TaskStep]) -> dict[str, float]:
        """The detached floats logged for a step. One task: its :func:`task_metrics` with the
        entropy gap and the buffer's driver shares. Several: ``losses/distill`` (the loss
        minimised) and each task's :func:`task_metrics` under ``tasks/<task>/``."""
        if not self.multitask:
            (only,) = steps.values()
            names = self._teacher_names(None, only)
            return {**with_entropy_gap(task_metrics(only, self.merges[None], names)), **self._tracking_metrics()}
        metrics = {"losses/distill": loss.item(), **self._tracking_metrics()}
        for task, task_step in steps.items():
            logged = task_metrics(task_step, self.merges[task], self._teacher_names(task, task_step))
            metrics.update({f"tasks/{task}/{k}": v for k, v in logged.items()})
        return metrics

    def _teacher_names(self, task: Task, task_step: TaskStep) -> list[str]:
        """The task's teachers by algo and run (merging.teacher_names), from its buffer's meta."""
        buffer = self.sampler if task is None else getattr(self.sampler, "buffers", {}).get(task)
        meta = getattr(buffer, "meta", None) or {}
        return teacher_names(meta.get("teachers"), len(task_step.batch.teacher_outputs))

    def _sample(self) -> dict[Task, DistillBatch]:
        """This step's batch per task: the sampler's dict, or one batch under the task None."""
        batches = self.sampler.sample(self.config.batch_size, self.rng, self.device)
        return batches if isinstance(batches, dict) else {None: batches}

    def _forward(self, observations: torch.Tensor, task: Task) -> StudentOutput:
        """``student(obs)`` for one task, ``student(obs, task)`` for several: ``(n_t, *obs_shape)`` in."""
        return self.student(observations) if task is None else self.student(observations, task)

    def _tracking_metrics(self) -> dict[str, float]:
        """``charts/teacher_transitions``: the teacher-labelled transitions trained on (all tasks'),
        a second x-axis next to the update count; one task: each driver's share of the buffer
        (``buffer/share_teacher``, ``buffer/share_student``)."""
        if not isinstance(self.sampler, LabelledBuffer):
            buffers = getattr(self.sampler, "buffers", {}).values()
            return {"charts/teacher_transitions": float(sum(len(b) for b in buffers))} if buffers else {}
        shares = {f"buffer/share_{name}": share for name, share in self.sampler.driver_shares().items()}
        return {**shares, "charts/teacher_transitions": float(len(self.sampler))}

    def run_evaluation(self, update: int) -> None:
        """Evaluate the student in eval mode, log the result at ``update`` and save the student
        (``checkpoint_dir``); checkpoints before (a cut evaluation is redone, not the updates
        before it) and after it (a finished one is never redone)."""
        assert self.evaluate is not None
        self._finite.check()
        self.save_checkpoint()
        self.student.eval()
        self.last_eval = self.evaluate(self.student)
        self.student.train()
        self._log(self.last_eval)
        self.evaluated_at = self.n_updates_done
        if self.checkpoint_dir is not None:
            self.student.save(self.checkpoint_dir)
        self.save_checkpoint()

    def save_checkpoint(self) -> None:
        """Write the training state to ``checkpoint_path`` (if any) in one atomic file; TensorBoard
        is flushed first, so it holds every step the checkpoint knows of."""
        self._finite.check()  # a checkpoint never keeps a diverged student
        if self.checkpoint_path is None:
            return
        flush = getattr(self.logger, "flush", None)
        if flush is not None:
            flush()
        tensors = {f"student/{name}": value for name, value in self.student.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, state in optimizer["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{index}/{key}"] = value
                else:
                    scalars.setdefault(str(index), {})[key] = value
        header = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            **{key: getattr(self, key) for key in _CHECKPOINT_FIELDS},
            "progress": self.progress,
            "rng": self.rng.bit_generator.state,
            "optimizer": {"param_groups": optimizer["param_groups"], "scalars": scalars},
        }
        with atomic_path(self.checkpoint_path) as tmp:
            tmp.write_bytes(state_dict_bytes(tensors, {"policykd": json.dumps(header)}))
        self._last_checkpoint = time.monotonic()

    def restore(self, checkpoint: TrainerCheckpoint) -> None:
        """Continue from ``checkpoint`` (:func:`read_checkpoint`): a Trainer built as the one that
        wrote it (same student architecture, config and sampler) takes its student weights, Adam
        state, sampling generator, counters and ``progress``, and logs again what had been logged
        at its step (a logger with ``purge_step`` there drops what came after: no duplicate steps)."""
        header, tensors = checkpoint.header, checkpoint.tensors
        try:
            self.student.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("student/")})
            state: dict[int, dict[str, Any]] = {}
            for key, value in tensors.items():
                if key.startswith("optimizer/"):
                    _, index, name = key.split("/", 2)
                    state.setdefault(int(index), {})[name] = value
            for index, values in header["optimizer"]["scalars"].items():
                state.setdefault(int(index), {}).update(values)
            self.optimizer.load_state_dict({"state": state, "param_groups": header["optimizer"]["param_groups"]})
            self.rng.bit_generator.state = header["rng"]
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            raise PolicyKDError(
                f"the checkpoint does not fit this training run ({reason}); run again with --overwrite"
            ) from None
        for key in _CHECKPOINT_FIELDS:
            setattr(self, key, header[key])
        self.progress.clear()
        self.progress.update(header["progress"])
        if self.logged_now:
            self.logger.log(self.logged_now, self.n_updates_done)

    def hparams(self) -> dict[str, Any]:
        """The TrainerConfig as a dict, for ``MetricLogger.log_hparams``."""
        return dataclasses.asdict(self.config)


# Trainer attributes a checkpoint keeps as JSON (besides the tensors, the Adam settings and the generator).
_CHECKPOINT_FIELDS = (
    "n_updates_done",
    "round_updates",
    "last_eval",
    "last_metrics",
    "evaluated_at",
    "logged_now",
)


class TrainerCheckpoint(NamedTuple):
    """A checkpoint file read back: its JSON header and its tensors (``student/...``, ``optimizer/...``)."""

    header: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def n_updates_done(self) -> int:
        return int(self.header["n_updates_done"])


def read_checkpoint(path: str | Path) -> TrainerCheckpoint:
    """A checkpoint written by :meth:`Trainer.save_checkpoint`; anything else is a PolicyKDError."""
    try:
        raw = Path(path).read_bytes()
        tensors = load_safetensors(raw)
        header = json.loads(_safetensors_metadata(raw)["policykd"])
        if header.get("format") != CHECKPOINT_FORMAT or header.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"its header is {header.get('format')!r} version {header.get('version')!r}")
    except (OSError, SafetensorError, ValueError, KeyError, TypeError) as err:
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise PolicyKDError(
            f"{path} is not a policykd training checkpoint ({reason}); run again with --overwrite"
        ) from None
    return TrainerCheckpoint(header, tensors)


def _safetensors_metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes: an 8-byte little-endian header length, then JSON."""
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size]).get("__metadata__") or {}


def task_metrics(task_step: TaskStep, merge: MergeFn, teacher_names: list[str] | None = None) -> dict[str, float]:
    """One task's detached metrics: the loss's, :func:`metrics.distill_metrics` against its
    teachers at tau = 1 (merged by ``merge``) and, with several teachers, their disagreement and
    the student's KL to each (``teachers/<name>/...``, named by ``teacher_names``)."""
    references = [soften(out, 1.0) for out in task_step.batch.teacher_outputs]  # the teachers at tau = 1
    student_out, target = task_step.student_out, task_step.target
    metrics = {**task_step.loss_out.metrics, **distill_metrics(student_out, target, merge(references))}
    if len(references) > 1:  # ensembles: how far the student is from each teacher, and theirs apart
        metrics.update(per_teacher_kl(student_out, references, teacher_names), **teacher_disagreement(references))
    return metrics


def _check_finite(what: str, value: torch.Tensor, update: int) -> None:
    """Stop a diverged run in one line instead of training (and reporting) NaN."""
    if not torch.isfinite(value).all():
        raise PolicyKDError(
            f"training diverged: {what} is {value.item():g} at update {update}; "
            "lower the learning rate (--lr) or check the teacher's outputs"
        )


class _FiniteWatch:
    """The Trainer's NaN / inf check. On the CPU each value is checked as it comes (reading a
    CPU tensor costs nothing). On a GPU, reading it would make the host wait for the device every
    update, so the flags are ANDed on the device and read at :meth:`check` (the log steps,
    evaluations and checkpoints); the error then names the updates the divergence lies between."""

    def __init__(self, device: torch.device) -> None:
        self.eager = device.type == "cpu"
        self.all_finite = torch.ones((), dtype=torch.bool, device=device)
        self.since: int | None = None  # the first update watched since the last check
        self.last = 0

    def watch(self, what: str, value: torch.Tensor, update: int) -> None:
        if self.eager:
            _check_finite(what, value, update)
            return
        self.all_finite &= torch.isfinite(value).all()
        self.since = update if self.since is None else self.since
        self.last = update

    def check(self) -> None:
        """Raise PolicyKDError if a value watched since the last check was not finite."""
        if self.since is None:
            return
        since, self.since = self.since, None
        if not bool(self.all_finite):
            raise PolicyKDError(
                f"training diverged: the loss or gradient norm became NaN or infinite between update {since} "
                f"and {self.last}; lower the learning rate (--lr) or check the teacher's outputs"
            )


def with_entropy_gap(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` plus ``distill/entropy_gap`` = ``student/entropy`` (as it acts, tau = 1) minus
    ``teacher/entropy`` (the target at tau), in nats, when both are there (not for deterministic
    policies). Positive: the student is more random than the target it is trained towards."""
    if "student/entropy" in metrics and "teacher/entropy" in metrics:
        return {**metrics, "distill/entropy_gap": metrics["student/entropy"] - metrics["teacher/entropy"]}
    return metrics


def resolve_temperature(configured: float | None, loss_fn: LossFn, task: Task = None) -> float:
    """The tau to soften a task's teachers at: ``configured``, else the loss's (KL applies it to
    the student too), else 1. Both set and different is refused."""
    tau = loss_fn.temperature
    if configured is not None and tau is not None and configured != tau:
        of_task = "" if task is None else f" (task {task!r})"
        raise PolicyKDError(
            f"TrainerConfig.temperature {configured} differs from the loss's {tau}{of_task}; set it in one place"
        )
    if configured is not None:
        return configured
    return tau if tau is not None else 1.0


def _place_frame_stacks(sampler: Sampler, device: torch.device) -> dict[Task, str]:
    """Where each frame-stacked buffer's stacks are rebuilt (``device_frames.place_frame_stacks``:
    on a GPU from a copy of its frames when that fits), one line each; tasks without frame stacks left out."""
    buffers = {None: sampler} if isinstance(sampler, LabelledBuffer) else getattr(sampler, "buffers", {})
    placed = {task: place_frame_stacks(buffer, device) for task, buffer in buffers.items()}
    return {task: line for task, line in placed.items() if line is not None}


def _per_task(
    student: torch.nn.Module,
    sampler: Sampler,
    loss_fn: LossFn | Mapping[str, LossFn],
    merge: MergeFn | Mapping[str, MergeFn],
) -> tuple[dict[Task, LossFn], dict[Task, MergeFn]]:
    """Each task's loss and merge: key None for one task, the sampler's tasks (checked against
    the student, buffers and losses by ``multitask.check_tasks``) for several."""
    if not isinstance(sampler, MultiTaskSampler):
        if isinstance(loss_fn, Mapping) or isinstance(merge, Mapping):
            raise PolicyKDError("losses or merges per task need a MultiTaskSampler; pass one loss and one merge")
        return {None: loss_fn}, {None: merge}
    loss_fns = dict(loss_fn) if isinstance(loss_fn, Mapping) else dict.fromkeys(sampler.tasks, loss_fn)
    merges = dict(merge) if isinstance(merge, Mapping) else dict.fromkeys(sampler.tasks, merge)
    check_tasks(student, sampler, loss_fns, merges)
    return loss_fns, {task: merges.get(task, single_teacher) for task in sampler.tasks}
