"""Run configuration: dataclasses are the source of truth, YAML files override defaults, and
``key.sub=value`` command-line overrides override the YAML. The resolved config is saved with every run.

    config = load_config("configs/minilm/sst2.yaml", ["prune.density=0.5", "train.lr=3e-4"])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from aptune.distill.self_distill import DistillConfig


@dataclass
class ModelConfig:
    name: str = "minilm"  # short name, folder or hub id
    head: str = "sequence-classification"


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


@dataclass
class AdapterSection:
    targets: list[str] = field(default_factory=list)  # empty: the family's default (BERT q,v,up; LLaMA q,v)
    rank: int = 8
    scaling: float = 2.0
    train_head: bool = True
    train_base: bool = False  # full fine-tuning baseline


@dataclass
class PruneConfig:
    enabled: bool = True
    density: float = 0.4  # fraction of the prunable parameters kept at the end
    salience: str = "apt"  # apt | weight_gradient | magnitude | random
    kurtosis: bool | None = None  # None: the family's default (on for decoders)
    num_steps: int = 10  # pruning steps
    start_step: int = 200  # salience collection starts; warm-up before
    end_fraction: float = 0.5  # the last pruning step, as a fraction of training
    warmup_fraction: float = 0.1  # density plateau after start, as a fraction of training
    mask_lr: float = 0.01  # soft mask step per training step
    round_to: int = 1  # round kept FFN / hidden sizes down to a multiple of this (faster matmuls)
    before_tuning: bool = False  # one-shot pruning from calibration batches before any tuning
    calibration_batches: int = 16


@dataclass
class RankConfig:
    strategy: str = "salience"  # salience | uniform | none
    budget_ratio: float = 4.0  # tuning parameters at the last pruning step / initial
    max_rank_ratio: float = 8.0  # rank cap / initial rank


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
    stop_after: int | None = None  # stop (as if crashed) after this step's checkpoint; for tests
    optimizer_reset: bool = False  # True reproduces the paper: AdamW moments dropped at every shape change
    seed: int = 42
    threads: int | None = None


@dataclass
class APTConfig:
    """The method's own settings, all an :class:`aptune.APT` needs (the recipe adds data, model and loop).

    Attributes:
        prune: what to prune, how far and when (density, salience, schedule).
        rank: how the adapters' ranks grow.
        distill: self-distillation.
        optimizer_reset: drop every AdamW moment at a shape change (the paper) instead of carrying the
            survivors' over (aptune's default).
    """

    prune: PruneConfig = field(default_factory=PruneConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optimizer_reset: bool = False


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    adapter: AdapterSection = field(default_factory=AdapterSection)
    prune: PruneConfig = field(default_factory=PruneConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if not 0.0 < self.prune.density <= 1.0:
            raise ValueError(f"prune.density must lie in (0, 1]; got {self.prune.density}")
        if self.distill.teacher not in ("best", "live"):
            raise ValueError(f"distill.teacher must be best or live; got {self.distill.teacher!r}")
        if self.rank.strategy not in ("salience", "uniform", "none"):
            raise ValueError(f"rank.strategy must be salience, uniform or none; got {self.rank.strategy!r}")
        if self.train.steps < 0 or self.train.batch_size <= 0:
            raise ValueError(f"train.steps must be >= 0 and train.batch_size positive; got {self.train.steps} and "
                             f"{self.train.batch_size}")
        if self.train.steps == 0 and self.prune.enabled and not self.prune.before_tuning:
            raise ValueError("train.steps=0 (evaluate and export without tuning) cannot prune on a schedule: set "
                             "prune.enabled=false, or prune.before_tuning=true for one cut before any tuning")
        if self.data.eval_file and not self.data.train_file:
            raise ValueError(f"data.eval_file={self.data.eval_file!r} needs data.train_file (the training data of "
                             "the same table); GLUE tasks (data.task) bring their own dev set")

    @property
    def method(self) -> APTConfig:
        """The sections the :class:`aptune.APT` object takes (shared, not copied)."""
        return APTConfig(self.prune, self.rank, self.distill, self.train.optimizer_reset)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Turn a YAML/CLI value into the field's type, with an error naming the key."""
    origin = get_origin(hint)
    args = [a for a in get_args(hint) if a is not type(None)]
    if value is None:
        if type(None) in get_args(hint):
            return None
        raise ValueError(f"{key} cannot be null")
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        return list(value)
    target = args[0] if args and origin is not None else hint
    try:
        if target is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError
            return bool(value)
        if target in (int, float, str):
            return target(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: cannot read {value!r} as {getattr(target, '__name__', target)}") from None
    return value


def _apply(obj: Any, updates: dict, prefix: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        path = f"{prefix}{key}"
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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- YAML file (may name a ``base:`` file) <- dotted overrides; validated."""
    config = RunConfig.__new__(RunConfig)
    for f in dataclasses.fields(RunConfig):
        setattr(config, f.name, f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        for layer in _yaml_chain(path):
            _apply(config, layer)
    _apply(config, parse_overrides(overrides or []))
    config.validate()
    return config


def override_config(config: RunConfig, tree: dict) -> RunConfig:
    """``config`` with a nested override tree (``{"prune": {"density": 0.5}}``) applied in place, validated."""
    _apply(config, tree)
    config.validate()
    return config


def _yaml_chain(path: Path) -> list[dict]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a mapping of sections")
    base = data.pop("base", None)
    chain = _yaml_chain((path.parent / base).resolve()) if base else []
    return chain + [data]
