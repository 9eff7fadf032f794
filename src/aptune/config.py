"""Run configuration: dataclasses are the source of truth, YAML files override defaults, and
``key.sub=value`` command-line overrides override the YAML. The resolved config is saved with every run.
Every value is checked when a config is read (type, range or choices, and the pruning schedule against
``train.steps``); an error names the key, what it must be, and, for a file's bad value or syntax, the file.

    config = load_config("configs/minilm/sst2.yaml", ["prune.density=0.5", "train.lr=3e-4"])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from aptune import configs as shipped_configs
from aptune.distill.recovery import TEACHERS, RecoveryConfig
from aptune.distill.self_distill import (KL_SCALE, LAYER_WEIGHT, PRED_WEIGHT, TEACHER_BLOCKS, TEMPERATURE,
                                        TRANSFORM_RANK, REFRESHES, DistillConfig)
from aptune.model import ADAPTER_ROLES, AdapterConfig
from aptune.models.loading import DTYPES, HEADS
from aptune.salience import SCORERS


@dataclass
class ModelConfig:
    name: str = "minilm"  # short name, folder or hub id
    head: str = "sequence-classification"
    # the frozen base's dtype (adapters and task head stay float32, the forward runs under autocast);
    # auto: bfloat16 on a GPU, float32 on CPU
    dtype: str = "auto"


@dataclass
class DataConfig:
    task: str = "sst2"
    data_dir: str | None = None
    max_length: int = 64
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # The user's own data set (aptune.data.user_files); train_file wins over task when set.
    train_file: str | None = None  # CSV, TSV, JSON Lines (.jsonl/.json) or Parquet, chosen by the extension
    eval_file: str | None = None  # None: a seeded 10% of train_file is held out for evaluation
    text_column: str | None = None  # None: the column named "text"
    text_pair_column: str | None = None  # the second text of a pair (NLI, paraphrase); None: single texts
    label_column: str | None = None  # None: the column named "label"; floats that are not whole: regression
    metric: str | None = None  # the primary dev metric (accuracy, f1, mcc, pearson, spearman); None: by labels
    instruction_field: str = "instruction"  # instruction data (model.head=causal-lm): the Alpaca field names
    input_field: str = "input"
    output_field: str = "output"
    messages_field: str | None = None  # chat records instead: a list of {role, content}; loss on the last answer
    # Instruction data: an Alpaca-format file whose records join the training split only (never the held-out
    # records), e.g. WordNet's definitions of science words (configs/smollm2/alpaca_wordnet.yaml).
    extra_train_file: str | None = None


@dataclass
class PruneConfig:
    enabled: bool = True
    density: float = 0.4  # fraction of the prunable parameters kept at the end
    salience: str = "apt"  # apt | weight_gradient | magnitude | random
    kurtosis: bool | None = None  # None: the family's default (on for decoders)
    num_steps: int = 10  # pruning steps
    # The window (start, end] of the pruning steps, as fractions of the run so that the defaults fit any length;
    # start_step, when set, is the start as a step instead (the paper's 200).
    start_fraction: float = 0.2  # salience collection starts; the adapters warm up before
    start_step: int | None = None
    end_fraction: float = 0.5  # the last pruning step
    warmup_fraction: float = 0.1  # density plateau after start, as a fraction of training
    mask_lr: float = 0.01  # soft mask step per training step
    round_to: int = 1  # round kept FFN / hidden sizes down to a multiple of this (faster matmuls)
    layer_floor: float = 0.0  # every layer keeps at least this fraction of its KV groups and FFN neurons; 0: none
    before_tuning: bool = False  # one-shot pruning from calibration batches before any tuning
    calibration_batches: int = 16
    # with before_tuning: refit the kept columns of every o / down the cut thins, by least squares on the next
    # calibration_batches batches, so that they write what the dense layer wrote (docs/method.md §D2)
    refit: bool = False

    def window(self, total_steps: int) -> tuple[int, int]:
        """The pruning window ``(start, end]`` in steps of a run of ``total_steps``."""
        start = self.start_step if self.start_step is not None else int(self.start_fraction * total_steps)
        return start, int(self.end_fraction * total_steps)

    @property
    def cuts_before_tuning(self) -> bool:
        """Pruning is one cut at step 0; the scheduled steps then only grow ranks."""
        return self.enabled and self.before_tuning


@dataclass
class RankConfig:
    strategy: str = "salience"  # salience | uniform | none
    budget_ratio: float = 4.0  # tuning parameters at the last pruning step / initial
    max_rank_ratio: float = 8.0  # rank cap / initial rank


# experiment trackers a run can write its metrics to (train.report_to; aptune.train.trackers writes them)
TRACKERS = ("tensorboard", "mlflow", "trackio")


@dataclass
class TrainConfig:
    steps: int = 1000  # 0: evaluate and export the model as loaded (after the one cut, with before_tuning)
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    eval_every: int = 100
    log_every: int = 10
    checkpoint_every: int = 0  # 0: no periodic checkpoints
    resume: bool = False  # continue from the latest checkpoint in output_dir/checkpoints
    overwrite: bool = False  # replace a previous run in output_dir (its files are removed first)
    seed: int = 42
    threads: int | None = None
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward (transformers' own)
    skip_memory_check: bool = False  # start even when the planned peak exceeds the free memory (train/preflight.py)
    # experiment trackers that also receive the metrics, written into output_dir (aptune.train.trackers)
    report_to: list[str] = field(default_factory=list)


@dataclass
class ExportConfig:
    dtype: str | None = None  # float32 | bfloat16 | float16; None: the base's dtype (model.dtype)


# a peer tool's method run in APT's place, by that tool's own code, for side-by-side comparisons (aptune.peers)
PEERS = ("none", "adalora", "torchpruning_magnitude", "torchpruning_taylor")


@dataclass
class PeerConfig:
    method: str = "none"


@dataclass
class APTConfig:
    """The method's own settings, all an :class:`aptune.APT` needs (the recipe adds data, model and loop).

    Attributes:
        prune: what to prune, how far and when (density, salience, schedule).
        rank: how the adapters' ranks grow.
        distill: self-distillation (off by default; :meth:`paper` turns it on).
        recover: distillation from the unpruned model after a cut before tuning (off by default).
    """

    prune: PruneConfig = field(default_factory=PruneConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    recover: RecoveryConfig = field(default_factory=RecoveryConfig)

    @classmethod
    def paper(cls) -> "APTConfig":
        """The paper's full method: aptune's defaults with self-distillation on. The defaults leave it off because
        it cost accuracy on every budget measured (results/distillation/README.md)."""
        return cls(distill=DistillConfig(enabled=True))

    def validate(self, total_steps: int) -> None:
        """Types and ranges of every value (the keys named as in a run config), and the pruning window
        against ``total_steps``: what :class:`aptune.APT` checks before it lays out its schedules."""
        _check_values(self)
        _check_schedule(total_steps, self.prune)
        _check_refit(self.prune)
        _check_recovery(self.recover, self.prune, self.distill)
        _check_distill(self.distill, self.prune, total_steps)


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    recover: RecoveryConfig = field(default_factory=RecoveryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    peer: PeerConfig = field(default_factory=PeerConfig)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Every value's type and range, then the values that must agree (the pruning schedule, the data
        files); the message names the key and what it must be."""
        _check_values(self)
        _check_schedule(self.train.steps, self.prune)
        _check_refit(self.prune)
        _check_recovery(self.recover, self.prune, self.distill)
        _check_distill(self.distill, self.prune, self.train.steps)
        _check_peer(self)
        if self.train.steps == 0 and self.prune.enabled and not self.prune.before_tuning:
            raise ValueError("train.steps=0 (evaluate and export without tuning) cannot prune on a schedule: set "
                             "prune.enabled=false, or prune.before_tuning=true for one cut before any tuning")
        if self.data.eval_file and not self.data.train_file:
            raise ValueError(f"data.eval_file={self.data.eval_file!r} needs data.train_file (the training data of "
                             "the same table); GLUE tasks (data.task) bring their own dev set")
        if self.data.extra_train_file and self.model.head != "causal-lm":
            raise ValueError(f"data.extra_train_file={self.data.extra_train_file!r} adds instruction records, which "
                             f"needs model.head=causal-lm (got {self.model.head!r})")
        if self.adapter.train_base and self.model.dtype in ("bfloat16", "float16"):
            raise ValueError(f"adapter.train_base=true (full fine-tuning) trains every weight, which needs float32 "
                             f"master weights; set model.dtype=float32 (got {self.model.dtype})")

    @property
    def method(self) -> APTConfig:
        """The sections the :class:`aptune.APT` object takes (shared, not copied)."""
        return APTConfig(self.prune, self.rank, self.distill, self.recover)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# ------------------------------------------------------------------------------------------ validation

_Rule = tuple[str, Callable[[Any], bool]]  # (what the value must do, in words: "be >= 0"; the test)

# Written so that NaN fails every test: `v >= 0` is False for NaN where `not v < 0` would be True.
_AT_LEAST_0: _Rule = ("be >= 0", lambda v: v >= 0)
_AT_LEAST_1: _Rule = ("be >= 1", lambda v: v >= 1)
_POSITIVE: _Rule = ("be > 0", lambda v: v > 0)
_IN_0_1_OPEN_CLOSED: _Rule = ("lie in (0, 1]", lambda v: 0 < v <= 1)
_IN_0_1_CLOSED_OPEN: _Rule = ("lie in [0, 1)", lambda v: 0 <= v < 1)
_IN_0_1_CLOSED: _Rule = ("lie in [0, 1]", lambda v: 0 <= v <= 1)
_NON_EMPTY: _Rule = ("be a non-empty string", lambda v: bool(v.strip()))


def _one_of(names) -> _Rule:
    names = tuple(names)
    return f"be one of {', '.join(names)}", lambda v: v in names


# Ranges and choices by key; types come from the dataclass fields, and null (where a field allows it) skips
# the rule. Every field with a range or a fixed set of choices is here.
_RULES: dict[str, _Rule] = {
    "output_dir": _NON_EMPTY,
    "model.name": _NON_EMPTY,
    "model.head": _one_of(HEADS),
    "model.dtype": _one_of(DTYPES),
    "export.dtype": _one_of(d for d in DTYPES if d != "auto"),
    "data.task": _NON_EMPTY,
    "data.data_dir": _NON_EMPTY,
    "data.max_length": _AT_LEAST_1,
    "data.max_train_samples": _AT_LEAST_1,
    "data.max_eval_samples": _AT_LEAST_1,
    "data.train_file": _NON_EMPTY,
    "data.eval_file": _NON_EMPTY,
    "data.text_column": _NON_EMPTY,
    "data.text_pair_column": _NON_EMPTY,
    "data.label_column": _NON_EMPTY,
    "data.metric": _NON_EMPTY,
    "data.instruction_field": _NON_EMPTY,
    "data.input_field": _NON_EMPTY,
    "data.output_field": _NON_EMPTY,
    "data.messages_field": _NON_EMPTY,
    "data.extra_train_file": _NON_EMPTY,
    "adapter.targets": (f"be a list of {', '.join(ADAPTER_ROLES)}", lambda v: set(v) <= set(ADAPTER_ROLES)),
    "adapter.rank": _AT_LEAST_0,
    "distill.refresh": _one_of(REFRESHES),
    "peer.method": _one_of(PEERS),
    "distill.retrain_from": _IN_0_1_OPEN_CLOSED,
    "adapter.scaling": _POSITIVE,
    "prune.density": _IN_0_1_OPEN_CLOSED,
    "prune.salience": _one_of(SCORERS),
    "prune.num_steps": _AT_LEAST_1,
    "prune.start_fraction": _IN_0_1_CLOSED_OPEN,
    "prune.start_step": _AT_LEAST_0,
    "prune.end_fraction": _IN_0_1_OPEN_CLOSED,
    "prune.warmup_fraction": _IN_0_1_CLOSED_OPEN,
    "prune.mask_lr": _IN_0_1_OPEN_CLOSED,
    "prune.round_to": _AT_LEAST_1,
    "prune.layer_floor": _IN_0_1_CLOSED_OPEN,
    "prune.calibration_batches": _AT_LEAST_1,
    "rank.strategy": _one_of(("salience", "uniform", "none")),
    "rank.budget_ratio": _AT_LEAST_1,
    "rank.max_rank_ratio": _AT_LEAST_1,
    "recover.teacher": _one_of(TEACHERS),
    "recover.weight": _IN_0_1_CLOSED,
    "recover.temperature": _POSITIVE,
    "train.steps": _AT_LEAST_0,
    "train.batch_size": _AT_LEAST_1,
    "train.lr": _POSITIVE,
    "train.weight_decay": _AT_LEAST_0,
    "train.warmup_ratio": _IN_0_1_CLOSED_OPEN,
    "train.grad_clip": _POSITIVE,
    "train.eval_every": _AT_LEAST_1,
    "train.log_every": _AT_LEAST_1,
    "train.checkpoint_every": _AT_LEAST_0,
    "train.seed": _AT_LEAST_0,
    "train.threads": _AT_LEAST_1,
    "train.report_to": (f"be a list of {', '.join(TRACKERS)} (pip install \"aptune[track]\")",
                        lambda v: set(v) <= set(TRACKERS)),
}


# One line per key: what a user sets it for. The configuration reference (docs/reference/config.md) is generated
# from these, the types, defaults and rules above (describe_keys); tests/test_docs.py checks every key has one.
_HELP: dict[str, str] = {
    "output_dir": "the run folder: config, metrics, checkpoints, summary and the export go here",
    "model.name": "the model to start from: a short name (minilm, smollm2-135m), a folder, a .gguf file or a hub id",
    "model.head": "the task head: sequence-classification (labels or scores) or causal-lm (instruction data)",
    "model.dtype": "the frozen base's dtype; auto is bfloat16 on a GPU and float32 on CPU (adapters stay float32)",
    "data.task": "a GLUE task (sst2, mrpc, cola, stsb, rte, ...) or an instruction set (alpaca); data.train_file wins",
    "data.data_dir": "the only folder the task's files are read from (default: $APTUNE_DATA, shared/data, the hub)",
    "data.max_length": "tokens per example; longer texts are cut",
    "data.max_train_samples": "train on the first N shuffled training rows (null: all of them)",
    "data.max_eval_samples": "evaluate on the first N dev rows (null: all of them)",
    "data.train_file": "your own training data: CSV, TSV, JSON Lines or Parquet, chosen by the extension",
    "data.eval_file": "your own dev data with the same columns (null: a seeded 10% of data.train_file is held out)",
    "data.text_column": "the column holding the text (null: the column named text)",
    "data.text_pair_column": "the column holding a second text, for pairs such as NLI or paraphrase (null: single texts)",
    "data.label_column": "the column holding the label (null: the column named label); non-whole numbers mean regression",
    "data.metric": "the primary dev metric: accuracy, f1, mcc, pearson or spearman (null: chosen by the labels)",
    "data.instruction_field": "instruction records: the field holding the instruction",
    "data.input_field": "instruction records: the field holding the optional input",
    "data.output_field": "instruction records: the field holding the answer that carries the loss",
    "data.messages_field": "chat records instead: the field holding a list of {role, content}; the last answer carries the loss",
    "data.extra_train_file": ("instruction records that join the training split only; WordNet's science definitions "
                              "gave SmolLM2 at 70% +2.3 ± 1.3 points of multiple-choice accuracy (seven seeds)"),
    "adapter.targets": ("the linears that get an adapter (q, k, v, o, up, gate, down; head: the task head's dense "
                        "layer, for a head that does not train whole); empty: the family's default"),
    "adapter.rank": "each adapter's starting rank (the paper: 8); 0 for full fine-tuning",
    "adapter.scaling": "the constant s in W + s·B·A (the paper: 2, i.e. alpha 16 at rank 8)",
    "adapter.train_head": "train the task head (classifier, pooler) along with the adapters",
    "adapter.train_base": "train every weight: the full fine-tuning baseline",
    "prune.enabled": "prune at all; false tunes the dense model (ranks still grow)",
    "prune.density": "the share of the prunable parameters kept at the end",
    "prune.salience": "how blocks are scored: apt (activation x gradient, outlier-aware), weight_gradient, magnitude, random",
    "prune.kurtosis": "add the outlier (kurtosis) term to apt salience (null: on for decoders, off for encoders)",
    "prune.num_steps": "how many pruning steps the density is reached in",
    "prune.start_fraction": "salience collection starts after this fraction of train.steps; the adapters warm up before",
    "prune.start_step": "the start as a step instead of a fraction (null: prune.start_fraction decides)",
    "prune.end_fraction": "the last pruning step, as a fraction of train.steps",
    "prune.warmup_fraction": "a density plateau after the start, as a fraction of train.steps",
    "prune.mask_lr": "how far the soft masks move toward the next keep set per step",
    "prune.round_to": "kept FFN widths and hidden sizes are multiples of this (8 runs much faster than 1)",
    "prune.layer_floor": "every layer keeps at least this share of its KV groups and FFN neurons (0: no floor)",
    "prune.before_tuning": "cut once before any tuning, from calibration batches (the paper's large-decoder setting)",
    "prune.calibration_batches": "with before_tuning: the training batches whose salience chooses the cut",
    "prune.refit": ("with before_tuning: refit each thinned output projection by least squares on calibration batches "
                    "(SmolLM2 at 70%: held-out loss -0.048 ± 0.018, five seeds)"),
    "rank.strategy": "how adapter ranks grow: salience (the paper), uniform, or none (fixed ranks)",
    "rank.budget_ratio": "tuning parameters at the last pruning step, as a multiple of the starting ones",
    "rank.max_rank_ratio": "no adapter grows past this multiple of its starting rank",
    "distill.enabled": ("self-distillation from a snapshot of the adapters while pruning, the paper's full method "
                        "(MiniLM/SST-2 at 40%: -1.1 points [-1.9, -0.4] against off, three seeds)"),
    "peer.method": ("none (APT), or a peer's method run by the peer's own code in its place, for comparisons: adalora "
                    "(PEFT's AdaLoRA on the dense model, its final rank budget rank.budget_ratio x adapter.rank), "
                    "torchpruning_magnitude or torchpruning_taylor (Torch-Pruning's cut to prune.density before "
                    "tuning, by group weight norm or by Taylor importance from prune.calibration_batches, then PEFT's "
                    "LoRA; the peers extra)"),
    "distill.refresh": ("when the teacher is renewed: best (at every new best dev score; it runs on the unpruned "
                        "backbone) or decay_start (the official code's: scored at the start of each mask decay, the "
                        "teacher is the model just scored)"),
    "distill.retrain_from": ("the official code's end of distillation, as a fraction of train.steps after the last "
                             "pruning step: reload the best adapters since then, retrain on the task loss at 0.1x "
                             "train.lr (null: distillation ends at the last pruning step)"),
    "recover.teacher": ("after a cut before tuning: none, or dense to distil from the model as it was before the cut "
                        "(SmolLM2 at 70%: held-out loss -0.003 ± 0.042, no effect detectable)"),
    "recover.weight": "with recover.teacher=dense: the distillation loss's share of the loss",
    "recover.temperature": "with recover.teacher=dense: the KL's temperature",
    "train.steps": "optimizer steps; 0 evaluates and exports the model as loaded",
    "train.batch_size": "examples per step (per process)",
    "train.lr": "the AdamW learning rate (linear warm-up, then linear decay)",
    "train.weight_decay": "AdamW weight decay",
    "train.warmup_ratio": "the share of the steps the learning rate warms up over",
    "train.grad_clip": "gradients are clipped to this norm",
    "train.eval_every": "evaluate on the dev set every N steps (and at the end)",
    "train.log_every": "write a metrics line (and a plain progress line in a log file) every N steps",
    "train.checkpoint_every": "write a checkpoint every N steps (0: none), for train.resume",
    "train.resume": "continue from the newest intact checkpoint in output_dir",
    "train.overwrite": "replace an earlier run in output_dir (its files are removed first)",
    "train.seed": "the seed of data order, initialisation and sampling: the same seed gives the same run",
    "train.threads": "CPU threads for torch (null: torch's default)",
    "train.gradient_checkpointing": "recompute each layer in the backward pass: less activation memory, more time",
    "train.skip_memory_check": "start even when the planned peak memory exceeds what the machine has free",
    "train.report_to": ("experiment trackers that also get the metrics, written into output_dir: tensorboard, mlflow, "
                        "trackio (e.g. [tensorboard, mlflow]; empty: none)"),
    "export.dtype": "the export's dtype (null: the base's, model.dtype)",
}


@dataclass(frozen=True)
class KeyDoc:
    """One config key as the reference shows it."""

    key: str  # dotted, as in a YAML file or a key=value override
    type: str  # "float", "int | null", "list of strings", ...
    default: Any
    allowed: str  # the rule in words ("lie in (0, 1]"), "" when any value of the type goes
    help: str


def describe_keys() -> list[KeyDoc]:
    """Every key of a run config with its type, default, allowed values and use, in the order of the sections."""
    docs = []
    for key, default, hint in _leaves(_default_run_config()):
        target = _target_type(hint)
        kind = {int: "int", float: "float", bool: "bool", str: "string", list: "list of strings"}[target]
        kind += " | null" if _allows_null(hint) else ""
        docs.append(KeyDoc(key, kind, default, _RULES[key][0] if key in _RULES else "", _HELP[key]))
    return docs


def _check_values(config: Any) -> None:
    """Every value of ``config`` (a run config or the method's sections) against its type and its rule."""
    hints = {}
    for key, value, hint in _leaves(config):
        _check_type(value, hint, key)
        hints[key] = hint
    for key, (rule, holds) in _RULES.items():
        if key not in hints:  # a rule of a section this config does not have
            continue
        value = _value_at(config, key)
        if value is not None and not holds(value):
            also = " (or null)" if _allows_null(hints[key]) else ""
            raise ValueError(f"{key} must {rule}{also}; got {value!r}")


def _leaves(obj: Any, prefix: str = ""):
    """``(dotted key, value, type hint)`` of every non-section field, sections walked in order."""
    hints = get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, hints[f.name]


def _value_at(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _target_type(hint: Any) -> Any:
    """``int`` for ``int`` and ``int | None``; ``list`` for ``list[str]``."""
    if get_origin(hint) is list:
        return list
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _type_name(target: Any) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a string",
            list: "a list of strings"}.get(target, getattr(target, "__name__", str(target)))


def _allows_null(hint: Any) -> bool:
    return type(None) in get_args(hint)


def _check_type(value: Any, hint: Any, key: str) -> None:
    """A value set in Python (not read from YAML) must already have its field's type."""
    if value is None:
        if not _allows_null(hint):
            raise ValueError(f"{key} cannot be null; give {_type_name(_target_type(hint))}")
        return
    target = _target_type(hint)
    fits = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        str: lambda v: isinstance(v, str),
        list: lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v),
    }.get(target, lambda v: True)
    if not fits(value):
        raise ValueError(f"{key} must be {_type_name(target)}; got {value!r}")


def _check_schedule(steps: int, prune: "PruneConfig") -> None:
    """The pruning window ``(start, end]`` (``PruneConfig.window``) must lie in the run and hold at least one step
    per pruning step (rank growth follows the same steps, so this holds with pruning off). The error says what
    would fit: the smallest train.steps that holds the schedule as configured, or the values to change."""
    if steps == 0:  # evaluate and export only: there is no schedule
        return
    problem = _window_problem(steps, prune)
    if problem is None:
        return
    least = _least_steps(prune)
    if least is None:
        raise ValueError(f"{problem}; no number of train.steps holds this schedule")
    raise ValueError(f"{problem}; the shortest run that holds this schedule has train.steps={least}")


def _window_problem(steps: int, prune: "PruneConfig") -> str | None:
    """What keeps the pruning window of a ``steps``-step run from holding ``prune.num_steps`` steps (None: nothing)."""
    start, end = prune.window(steps)
    count = prune.num_steps
    if start >= steps:  # only a fixed start can be: a start fraction lies below 1
        return f"prune.start_step={start} is past train.steps={steps}; set prune.start_step below {steps}"
    begins = (f"prune.start_step={start}" if prune.start_step is not None
              else f"prune.start_fraction={prune.start_fraction} x train.steps={steps}")
    ends = f"prune.end_fraction={prune.end_fraction} x train.steps={steps}"
    if end <= start:
        least = math.ceil((start + 1) / steps * 1000) / 1000  # rounded up, so the product reaches start + 1
        fixes = f"set prune.end_fraction to at least {least:g}" if least <= 1 else "train longer"
        if end >= 1:
            fixes += f" or start before step {end}"
        return f"the pruning window ends at step {end} ({ends}), not after its start at step {start} ({begins}); {fixes}"
    if end - start < count:
        return (f"prune.num_steps={count} pruning steps do not fit in the pruning window ({start}, {end}] ({begins}, "
                f"{ends}), which holds {end - start} steps; set prune.num_steps to at most {end - start}, or widen "
                "the window")
    return None


def _least_steps(prune: "PruneConfig", tries: int = 100_000) -> int | None:
    """The smallest train.steps whose window holds the schedule as configured (None: no run length does).

    The window (start, end] can hold at most (end_fraction - start_fraction) x steps + 1 steps, or end_fraction x
    steps - start_step with a fixed start, so no run shorter than that bound fits; the floors of the fractions
    then cost at most a few steps more, found by trying the lengths from the bound up."""
    gain = prune.end_fraction - (0.0 if prune.start_step is not None else prune.start_fraction)
    if gain <= 0:
        return None
    fixed = prune.start_step if prune.start_step is not None else -1
    bound = max(1, math.floor((prune.num_steps + fixed) / gain))
    return next((steps for steps in range(bound, bound + tries) if _window_problem(steps, prune) is None), None)


def _check_refit(prune: "PruneConfig") -> None:
    """The refit follows the one cut before tuning; cuts during tuning have the adapters to recover with."""
    if prune.refit and not (prune.enabled and prune.before_tuning):
        raise ValueError("prune.refit=true refits the writers of the one cut before tuning: set prune.enabled=true "
                         "and prune.before_tuning=true, or prune.refit=false")


def _check_peer(config: "RunConfig") -> None:
    """A peer's method replaces APT's: nothing of APT's own may be asked for beside it. A pruning peer cuts to
    prune.density once before tuning (prune.enabled=true); AdaLoRA tunes the dense model (prune.enabled=false)."""
    method = config.peer.method
    if method == "none":
        return
    prunes = method.startswith("torchpruning_")
    wrong = [f"prune.enabled={str(config.prune.enabled).lower()}"] if config.prune.enabled != prunes else []
    wrong += [f"{key}=true" for key, on in (("distill.enabled", config.distill.enabled),
                                             ("adapter.train_base", config.adapter.train_base)) if on]
    wrong += ["adapter.rank=0"] if config.adapter.rank == 0 else []
    if wrong:
        doing = "prunes to prune.density once, then tunes" if prunes else "tunes the dense model"
        raise ValueError(f"peer.method={method} {doing} with the peer's adapters, which {wrong[0]} contradicts: set "
                         f"prune.enabled={str(prunes).lower()}, distill.enabled=false, adapter.train_base=false and "
                         "adapter.rank > 0, or peer.method=none")


def _check_distill(distill: DistillConfig, prune: "PruneConfig", steps: int) -> None:
    """The teacher's options need a teacher; the retraining starts after the last pruning step."""
    changed = [k for k, default in (("refresh", "best"), ("retrain_from", None)) if getattr(distill, k) != default]
    if changed and not (distill.enabled and prune.enabled):
        raise ValueError(f"distill.{changed[0]}={getattr(distill, changed[0])} sets how self-distillation runs: set "
                         "distill.enabled=true and prune.enabled=true, or leave it out")
    if distill.retrain_from is not None and int(distill.retrain_from * steps) <= prune.window(steps)[1]:
        raise ValueError(f"distill.retrain_from={distill.retrain_from} starts the retraining at step "
                         f"{int(distill.retrain_from * steps)}, not after the last pruning step "
                         f"({prune.window(steps)[1]}): choose a fraction above prune.end_fraction={prune.end_fraction}")


def _check_recovery(recover: RecoveryConfig, prune: "PruneConfig", distill: DistillConfig) -> None:
    """Distillation from the unpruned model needs a cut before tuning, and replaces self-distillation."""
    if not recover.enabled:
        return
    if not (prune.enabled and prune.before_tuning):
        raise ValueError(f"recover.teacher={recover.teacher} distils from the model as it was before a cut before "
                         "tuning: set prune.enabled=true and prune.before_tuning=true (pruning on a schedule has "
                         "self-distillation, distill.enabled, instead)")
    if distill.enabled:
        raise ValueError(f"recover.teacher={recover.teacher} and self-distillation (distill.enabled=true) both add a "
                         "distillation loss; set distill.enabled=false, or recover.teacher=none")


# ------------------------------------------------------------------------------- reading and overrides


def _as_int(value: Any, key: str) -> int:
    """A whole number: ints, integral floats (``1000.0``) and their strings; ``1.5`` is refused, not cut to 1."""
    number = _as_float(value, key, "a whole number")
    if isinstance(number, int):
        return number
    if not number.is_integer():
        raise ValueError(f"{key} must be a whole number; got {value!r}")
    return int(number)


def _as_float(value: Any, key: str, kind: str = "a number") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{key} must be {kind}; got {value!r}")
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{key} must be {kind}; got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{key} must be a finite number; got {value!r}")
    return number


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if isinstance(value, (str, int)) and str(value).lower() in words:
        return words[str(value).lower()]
    raise ValueError(f"{key} must be true or false; got {value!r}")


def _as_str_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):  # from the command line: q,v,up
        return [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{key} must be a list of strings (or one comma-separated string); got {value!r}")
    return list(value)


def _as_str(value: Any, key: str) -> str:
    if isinstance(value, (list, tuple, dict)):
        raise ValueError(f"{key} must be a string; got {value!r}")
    return str(value)


_READERS = {int: _as_int, float: _as_float, bool: _as_bool, str: _as_str, list: _as_str_list}


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Turn a YAML/CLI value into the field's type, with an error naming the key."""
    if value is None:
        if _allows_null(hint):
            return None
        raise ValueError(f"{key} cannot be null; give {_type_name(_target_type(hint))}")
    target = _target_type(hint)
    reader = _READERS.get(target)
    value = reader(value, key) if reader else value
    return float(value) if target is float else value


# Keys of aptune before 1.0 that left the product because their studies measured no effect (CHANGELOG.md): the
# value 1.0 always uses, and what a config that sets another should do. A run folder's config.yaml written before 1.0
# names every key at its value then; where that is the value 1.0 uses, the key is read as before and dropped.
_DISTILL_FIXED = "the official code's loss and teacher are fixed (results/distillation/README.md); drop the key"
_NO_EFFECT = "it measured no effect (results/llama/mc500/README.md); drop the key"
_REMOVED: dict[str, tuple[Any, str]] = {
    "distill.temperature": (TEMPERATURE, _DISTILL_FIXED), "distill.pred_weight": (PRED_WEIGHT, _DISTILL_FIXED),
    "distill.layer_weight": (LAYER_WEIGHT, _DISTILL_FIXED), "distill.kl_scale": (KL_SCALE, _DISTILL_FIXED),
    "distill.num_blocks": (TEACHER_BLOCKS, _DISTILL_FIXED), "distill.normalize_hidden": (False, _DISTILL_FIXED),
    "distill.transform_rank": (TRANSFORM_RANK, _DISTILL_FIXED), "distill.teacher_masks": (True, _DISTILL_FIXED),
    "distill.dense_teacher": (True, _DISTILL_FIXED), "distill.max_mu": (1.0, _DISTILL_FIXED),
    "distill.teacher": ("best", _DISTILL_FIXED), "distill.end_fraction": (None, _DISTILL_FIXED),
    "data.train_responses": (None, _NO_EFFECT), "prune.calibration_file": (None, _NO_EFFECT),
    "prune.head_floor": (None, _NO_EFFECT), "recover.teacher_model": (None, _NO_EFFECT),
    "recover.hidden_weight": (0.0, _NO_EFFECT),
    "prune.refit_damp": (0.3, "the refit's ridge is fixed at 0.3; drop the key"),
    "train.mmap_threshold": (None, "drop the key"),
    "train.optimizer_reset": (False, "AdamW moments are always carried across a cut; drop the key"),
    "train.stop_after": (None, "a test hook, now aptune.train.train(config, stop_after=N); drop the key"),
}


def _apply(obj: Any, updates: dict, prefix: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if path in _REMOVED:
            fixed, advice = _REMOVED[path]
            if value == fixed and type(value) is type(fixed):  # a config written before 1.0, at 1.0's value
                continue
            raise ValueError(f"{path}={value!r} was removed in aptune 1.0, which always runs as if it were "
                             f"{yaml.safe_dump(fixed, default_style=None).splitlines()[0]}: {advice}")
        if key not in names:
            raise ValueError(f"unknown config key {path!r}; known keys here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{path} is a section; give its keys (e.g. {path}.<key>=...)")
            _apply(current, value, f"{path}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def parse_overrides(overrides: list[str]) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML scalars)."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value (e.g. prune.density=0.5)")
        key, raw = item.split("=", 1)
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return tree


def _default_run_config() -> RunConfig:
    """A run config of the defaults, not yet validated (its schedule is checked once the file and overrides are in)."""
    config = RunConfig.__new__(RunConfig)
    for f in dataclasses.fields(RunConfig):
        setattr(config, f.name, f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- YAML file (may name a ``base:`` file) <- dotted overrides; validated. ``path`` is a file or the
    name of a shipped config (``minilm/sst2``, see :mod:`aptune.configs`)."""
    config = _default_run_config()
    if path is not None:
        path = shipped_configs.resolve(path)
        for layer_path, layer in _yaml_chain(path):
            try:
                _apply(config, layer)
            except ValueError as err:  # say which file of the base: chain holds the bad value
                raise ValueError(f"{layer_path}: {err}") from None
    _apply(config, parse_overrides(overrides or []))
    config.validate()
    return config


def override_config(config: RunConfig, tree: dict) -> RunConfig:
    """``config`` with a nested override tree (``{"prune": {"density": 0.5}}``) applied in place, validated."""
    _apply(config, tree)
    config.validate()
    return config


def _read_yaml(path: Path) -> Any:
    """The parsed file; a syntax error names the file and line (``path:line: ...``)."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = " ".join(filter(None, (getattr(err, "context", None), getattr(err, "problem", None))))
        raise ValueError(f"{where}: not valid YAML: {problem or err}") from None


def _yaml_chain(path: Path) -> list[tuple[Path, dict]]:
    """``(file, mapping)`` of the ``base:`` files, the furthest first, then ``path`` itself."""
    data = _read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a mapping of sections")
    base = data.pop("base", None)
    if not base:
        return [(path, data)]
    base_path = (path.parent / str(base)).resolve()
    if not base_path.is_file():
        raise FileNotFoundError(f"{path}: its base file {base!r} ({base_path}) does not exist")
    return _yaml_chain(base_path) + [(path, data)]
