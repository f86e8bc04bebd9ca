"""The distillation loss's options that ``policykd distill`` and ``policykd finetune`` share are
declared once (jobs/config.LossOptions), keep their CLI flags and config.yml keys, and reach both
jobs' losses."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from policykd.cli import parse_args
from policykd.cli_options import config_values
from policykd.jobs.config import CollectConfig, DistillConfig, LossOptions
from policykd.jobs.finetune import FinetuneConfig
from policykd.learn.losses import KLLoss

# Each shared option away from its default: its CLI flags, and its value as a config field.
FLAGS = (
    *("--kl-direction", "reverse", "--tau2-scaling", "--no-q-center", "--nll-min-std", "0.2"),
    *("--hard-label-weight", "0.5", "--label-smoothing", "0.1"),
)
SET = {
    "kl_direction": "reverse",
    "tau2_scaling": True,
    "center_q": False,
    "nll_min_std": 0.2,
    "hard_label_weight": 0.5,
    "label_smoothing": 0.1,
}
# A run folder's config.yml of either job written before LossOptions (the keys as they were)
OLD_CONFIG_YML = """\
loss: kl
kl_direction: reverse
tau2_scaling: true
center_q: false
nll_min_std: 0.2
label_smoothing: 0.1
hard_label_weight: 0.5
seed: 3
"""


def test_the_shared_loss_options_are_declared_once() -> None:
    """No config declares a LossOptions field itself: both inherit it, with its one default."""
    shared = {field.name: field.default for field in dataclasses.fields(LossOptions)}
    assert shared == {"kl_direction": "forward", "tau2_scaling": False, "center_q": True, "nll_min_std": 0.1,
                      "hard_label_weight": 0.0, "label_smoothing": 0.0}  # fmt: skip
    assert set(shared) == set(SET)
    for cls in (CollectConfig, DistillConfig, FinetuneConfig):
        assert not set(shared) & set(vars(cls).get("__annotations__", {})), cls
    for cls in (DistillConfig, FinetuneConfig):
        assert issubclass(cls, LossOptions)
        assert {f.name: f.default for f in dataclasses.fields(cls) if f.name in shared} == shared
        parameters = inspect.signature(cls).parameters  # keyword-only: no config's own field moved
        assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in shared)


@pytest.mark.parametrize(("command", "config_cls"), [("distill", DistillConfig), ("finetune", FinetuneConfig)])
def test_flags_and_config_yml_keys_fill_the_shared_options(command: str, config_cls: type, tmp_path: Path) -> None:
    from_flags = config_cls(**config_values(parse_args([command, *FLAGS]), config_cls))
    assert {name: getattr(from_flags, name) for name in SET} == SET
    path = tmp_path / "config.yml"
    path.write_text(OLD_CONFIG_YML)
    from_file = config_cls(**config_values(parse_args([command, "--config", str(path)]), config_cls))
    assert dataclasses.replace(from_file, seed=0, loss=None) == dataclasses.replace(from_flags, loss=None)


def test_both_jobs_build_their_loss_from_the_shared_options() -> None:
    from policykd.jobs.distill import _make_loss
    from policykd.jobs.finetune import loss_options

    kl = {name: value for name, value in SET.items() if name not in ("center_q", "nll_min_std")}  # kl's own
    distill_loss = _make_loss(DistillConfig(temperature=2.0, **kl), "kl", "categorical")
    assert distill_loss == KLLoss(2.0, "teacher", "reverse", True, "mean", 0.5, 0.1)
    options = loss_options(FinetuneConfig(temperature=2.0, **SET))
    assert options == {"temperature": 2.0, "direction": "reverse", "tau2_scaling": True, "center_q": False,
                       "nll_min_std": 0.2, "hard_label_weight": 0.5, "label_smoothing": 0.1}  # fmt: skip
