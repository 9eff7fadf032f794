"""PEFT's AdaLoRA as the peer of APT's adaptive tuning: which modules it adapts, its rank budget and schedule.

AdaLoRA starts every adapted module at ``init_r`` and prunes singular values by importance down to a total budget of
``target_r`` per module between step ``tinit`` and ``total_step - tfinal``. Set here so that it meets APT on equal
terms: the modules are the run's adapter targets (``adapter.targets``, the family's default: q, v and FFN-up for
BERT); ``target_r = rank.budget_ratio x adapter.rank``, the rank APT's growth reaches on the dense model (32 for the
main recipe); ``init_r = 1.5 x target_r`` (PEFT's default proportion, 12 to 8); the reduction runs over APT's pruning
window, one budget update every 10 steps; ``lora_alpha = adapter.scaling x target_r``; the task head trains whole
when ``adapter.train_head`` (PEFT's ``modules_to_save``), as APT's does. The budget is the one APT's growth aims at
on the dense model; APT's own final count is lower, since its cuts shrink the adapters' widths (about 548k against
663k tuning parameters on the main recipe), so the comparison errs in AdaLoRA's favour.
"""

from __future__ import annotations

from peft import AdaLoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn

from aptune.config import RunConfig
from aptune.families import family_for

TASK_TYPES = {"sequence-classification": TaskType.SEQ_CLS, "causal-lm": TaskType.CAUSAL_LM,
              "seq2seq-lm": TaskType.SEQ_2_SEQ_LM}
DELTA_T = 10  # steps between two budget updates


def adalora_config(model: nn.Module, config: RunConfig) -> AdaLoraConfig:
    """AdaLoRA's settings for ``model`` under the run ``config`` (see the module's docstring)."""
    family = family_for(model)
    roles = config.adapter.targets or list(family.default_adapter_roles)
    paths = family.role_paths()
    target_r = round(config.rank.budget_ratio * config.adapter.rank)
    start, end = config.prune.window(config.train.steps)
    return AdaLoraConfig(
        task_type=TASK_TYPES[config.model.head], target_modules=[p for role in roles for p in paths[role]],
        init_r=max(target_r, round(1.5 * target_r)), target_r=target_r, lora_alpha=config.adapter.scaling * target_r,
        tinit=start, tfinal=config.train.steps - end, deltaT=DELTA_T, total_step=config.train.steps,
        modules_to_save=list(family.task_head) if config.adapter.train_head else None)


def wrap(model: nn.Module, config: RunConfig, batches=None) -> tuple[PeftModel, dict]:
    """``model`` with PEFT's AdaLoRA adapters (the base frozen, the adapters and the head trainable), and what it
    was given (``batches``, the run's training stream, is not used: AdaLoRA has no calibration)."""
    settings = adalora_config(model, config)
    return get_peft_model(model, settings), {"init_r": settings.init_r, "target_r": settings.target_r}


def after_optimizer_step(model: PeftModel, step: int) -> None:
    """AdaLoRA's own budget step: importance from this step's gradients, then ranks masked to the budget (PEFT asks
    for it after ``optimizer.step()`` and before ``zero_grad``)."""
    model.base_model.update_and_allocate(step)


def ranks(model: PeftModel) -> dict[str, int]:
    """Each adapted module's rank as AdaLoRA left it (its singular values not masked to zero)."""
    out = {}
    for name, module in model.named_modules():
        values = getattr(module, "lora_E", None)
        if values is not None and "default" in values:
            out[name.removeprefix("base_model.model.")] = int((values["default"] != 0).sum())
    return out
