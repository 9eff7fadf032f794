"""Self-distillation (teacher mode over the shared backbone, layer mapping, the loss helpers) and distillation
from the unpruned model while a model cut before tuning recovers."""

from aptune.distill.recovery import RecoveryConfig, recovery_loss, teacher_outputs
from aptune.distill.schedule import DistillSchedule, mu_at
from aptune.distill.self_distill import (
    DistillConfig,
    LayerTransform,
    distill_loss,
    layer_loss,
    layer_stacks,
    layer_states,
    map_layers,
    mixed_loss,
    prediction_loss,
    sample_teacher_layers,
    snapshot_teacher,
    surviving_layers,
    teacher_mode,
)

__all__ = [
    "DistillConfig",
    "DistillSchedule",
    "LayerTransform",
    "RecoveryConfig",
    "distill_loss",
    "layer_loss",
    "layer_stacks",
    "layer_states",
    "map_layers",
    "mu_at",
    "mixed_loss",
    "prediction_loss",
    "recovery_loss",
    "sample_teacher_layers",
    "snapshot_teacher",
    "surviving_layers",
    "teacher_outputs",
    "teacher_mode",
]
