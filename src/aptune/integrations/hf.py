"""APT inside ``transformers.Trainer``: a callback for the per-step decisions and a Trainer subclass for what
a callback cannot reach (the loss, and the moment between backward and gradient clipping).

    apt = APT(APTModel.from_pretrained("minilm", num_labels=2), APTConfig(), total_steps=1000)
    trainer = APTTrainer(apt=apt, args=TrainingArguments("out", max_steps=1000, ...), train_dataset=...)
    trainer.train()
    apt.model.export("out/export")

What goes where:

* ``compute_loss``: :meth:`APT.compute_loss` while training (cross-entropy, or the μ-mix with
  self-distillation); the plain model loss in evaluation.
* ``training_step``: after backward, on the last micro-batch of an accumulation, :meth:`APT.after_backward`
  (salience and adapter importance read the accumulated gradients before the Trainer clips them).
* :class:`APTCallback` ``on_step_end`` (after the optimizer and LR-scheduler steps):
  :meth:`APT.after_optimizer_step` with the Trainer's optimizer, whose AdamW state follows every cut and
  rank growth in place, so the Trainer's LR scheduler continues; ``on_evaluate``: the dev score named by
  ``metric_for_best_model`` refreshes the distillation teacher on a new best.
* ``create_optimizer``: the distillation transform's tensors join the Trainer's optimizer, and gradient
  clipping covers them too.
* ``log``: every training log also holds the model's size (``density``, ``kept_density``, ``params``,
  ``tuning_params``), and each pruning step is logged (``prune/density``, ``prune/tuning_params``,
  ``prune/rank_max`` ...), so the integrations of ``TrainingArguments.report_to`` (TensorBoard, MLflow, Trackio,
  W&B) and ``state.log_history`` get aptune's events with the Trainer's own.

One process only: physical pruning changes the model's tensors, which a DDP wrapper cannot follow; several
processes train through ``accelerate launch -m aptune train`` (docs/design.md). Trainer checkpoints hold
the pruned weights under their new shapes; resuming a pruned run is ``aptune train``'s job (``train.resume``).
"""

from __future__ import annotations

import inspect
import logging

from transformers import Trainer, TrainerCallback
from transformers.utils import find_labels

from aptune.method import APT, PruningEvent
from aptune.train.trackers import scalars
from aptune.tuning.rank_allocator import tuning_params

logger = logging.getLogger("aptune")


class APTCallback(TrainerCallback):
    """Drives an :class:`APT` from the Trainer's events (see the module docstring).

    Args:
        log: where each pruning step's scalars go (:class:`APTTrainer` passes its ``log``, which hands them to
            the ``report_to`` integrations); None: only the ``aptune`` logger hears of them.

    Attributes:
        events: the :class:`aptune.method.PruningEvent` of every pruning step so far.
    """

    def __init__(self, apt: APT, log=None):
        self.apt = apt
        self.events = []
        self.log = log

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.apt.zero_grad()  # the Trainer zeroed the model's gradients; the transform's must go too
        event = self.apt.after_optimizer_step(optimizer)
        if event is not None:
            self.events.append(event)
            logger.info("aptune: pruning step %d/%d at step %d: density %.3f, removed %s, tuning params %d",
                        event.k, event.num_steps, event.step, event.density, event.removed, event.tuning_params)
            if self.log is not None:
                due = control.should_log  # logging clears the flag, and this step's training log is still due
                self.log(pruning_logs(event))
                control.should_log = due
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model
        if name and metrics:
            key = name if name.startswith("eval_") else f"eval_{name}"
            if key in metrics:
                self.apt.report_score(metrics[key], args.greater_is_better is not False)
        return control


class APTTrainer(Trainer):
    """A ``transformers.Trainer`` that trains ``apt.model`` the APT way.

    Args:
        apt: the method object; its model is the model trained (do not pass ``model``).
        Every other argument is the Trainer's.
    """

    def __init__(self, *args, apt: APT, **kwargs):
        if kwargs.get("model") is not None and kwargs["model"] is not apt.model:
            raise ValueError("APTTrainer trains apt.model; leave `model` out (or pass apt.model)")
        kwargs["model"] = apt.model
        super().__init__(*args, **kwargs)
        if self.args.world_size > 1:
            raise ValueError("APTTrainer runs in one process: physical pruning changes the tensors a DDP wrapper "
                             "holds. For several processes use `accelerate launch -m aptune train --config ...`")
        self.apt = apt
        self.apt_callback = APTCallback(apt, log=self.log)
        self.add_callback(self.apt_callback)
        self.model_accepts_loss_kwargs = False  # the loss is a per-batch mean, as in `aptune train`
        if self.args.label_names is None:  # the wrapper's forward hides the stock model's label arguments
            self.label_names = find_labels(type(apt.model.model))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: the model's size at this step too, as `aptune train`'s metrics lines
            model = self.apt.model
            logs = {**logs, "density": self.apt.density(), "kept_density": self.apt.kept_density(),
                    "params": model.num_params(), "tuning_params": tuning_params(model)}
        super().log(logs, start_time)

    def _set_signature_columns_if_needed(self):
        # the columns a data set may keep are the stock model's forward arguments, not the wrapper's (*args, **kwargs)
        if self._signature_columns is None:
            names = inspect.signature(self.apt.model.model.forward).parameters
            self._signature_columns = list(names) + list({"label", "label_ids", *self.label_names})

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            result = self.apt.compute_loss(inputs)
            loss, outputs = result.loss, result.outputs
        else:
            outputs = model(**inputs)
            loss = outputs.loss
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:  # the last micro-batch: the gradients are complete
            self.apt.after_backward()
        return loss

    def _clip_grad_norm(self, model):
        # clip what the optimizer updates, the distillation transform included, in its order (as `aptune train`)
        return self.accelerator.clip_grad_norm_(self.apt.trainable_parameters(), self.args.max_grad_norm)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        extra = [p for p in self.apt.trainable_parameters() if id(p) not in held]
        if extra:  # the distillation transform lives beside the model
            optimizer.add_param_group({"params": extra, "weight_decay": self.args.weight_decay})
        return optimizer


def pruning_logs(event: PruningEvent) -> dict[str, float]:
    """A pruning step as flat scalars for the Trainer's log: ``prune/density``, ``prune/removed/<kind>`` ... and
    the adapters' ranks summarised (``prune/rank_max``, ``prune/rank_mean``; one scalar per adapter would flood the
    Trainer's printed logs, ``aptune train``'s metrics.jsonl has them all)."""
    ranks = list(event.ranks.values())
    record = {"k": event.k, "density": event.density, "target_density": event.target_density, "params": event.params,
              "tuning_params": event.tuning_params, "removed": event.removed,
              "rank_max": max(ranks, default=0), "rank_mean": sum(ranks) / len(ranks) if ranks else 0.0}
    return scalars(record, "prune")
