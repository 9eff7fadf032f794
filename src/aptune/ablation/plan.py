"""An ablation plan: named config patches × tasks × seeds, with profiles (``configs/ablations/*.yaml``).

Ablations are configuration, never code branches (docs/design.md): a plan names one base run config and, per
variant, a patch to it. A profile picks the tasks, the seeds, overrides shared by every run (shorter
training, a data subset, ...) and the inference-timing settings. A run's config is built in this order,
later layers winning::

    base config <- profile.overrides <- profile.task_overrides[task] <- variant patch <- data.task, train.seed

The variant patch comes after the profile so that a variant's defining change (e.g. ``full_finetune``'s
learning rate) survives any profile. Nothing here imports torch: expanding a plan is instant.

    plan = load_plan("configs/ablations/apt_plan.yaml", profile="quick")
    for spec in plan.expand(only=["apt", "lora"]):
        print(spec.run_id, spec.overrides)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aptune import configs as shipped_configs

# The metric groups of the design's ablation table; a variant's `reports` picks among them.
METRIC_GROUPS = ("task_performance", "training_time", "training_convergence", "training_memory", "inference_time",
                 "inference_memory", "pruning_accuracy")
ROLES = ("method", "reference", "ablation")
_PLAN_KEYS = {"base", "name", "tasks", "seeds", "runs", "profiles", "default_profile", "overrides", "task_overrides",
              "inference", "evaluation", "timeout_s"}
_PROFILE_KEYS = {"tasks", "seeds", "overrides", "task_overrides", "inference", "evaluation", "timeout_s"}
_VARIANT_KEYS = {"patch", "role", "what", "group", "reports", "init_from", "paper"}


@dataclass
class InferenceSettings:
    """How the exported model of every run is timed (aptune.ablation.inference)."""

    batch_sizes: list[int] = field(default_factory=lambda: [32, 128])
    seq_len: int = 128
    warmup: int = 3
    repeats: int = 10
    threads: int | None = None  # None: torch's default (all cores)
    # causal LMs: also time greedy decoding, {batch_size, prompt_len, new_tokens} (None: not timed)
    generate: dict | None = None
    # after the runs, time every export of the plan in one process, interleaved (aptune bench)
    side_by_side: bool = True

    @classmethod
    def from_dict(cls, data: dict | None, where: str) -> "InferenceSettings":
        data = dict(data or {})
        unknown = set(data) - {"batch_sizes", "seq_len", "warmup", "repeats", "threads", "generate", "side_by_side"}
        if unknown:
            raise ValueError(f"{where}: unknown inference keys {sorted(unknown)}; known: batch_sizes, seq_len, "
                             f"warmup, repeats, threads, generate, side_by_side")
        settings = cls(**data)
        settings.batch_sizes = [int(b) for b in settings.batch_sizes]
        if not settings.batch_sizes or min(settings.batch_sizes) < 1 or settings.repeats < 1 or settings.seq_len < 1:
            raise ValueError(f"{where}: inference needs positive batch_sizes, seq_len and repeats")
        if settings.generate is not None:
            keys = {"batch_size", "prompt_len", "new_tokens"}
            if not isinstance(settings.generate, dict) or set(settings.generate) != keys or \
                    min(int(v) for v in settings.generate.values()) < 1:
                raise ValueError(f"{where}: inference.generate needs positive batch_size, prompt_len and new_tokens, "
                                 f"got {settings.generate!r}")
            settings.generate = {k: int(v) for k, v in settings.generate.items()}
        return settings


@dataclass
class EvaluationSettings:
    """Downstream evaluation of every run's export with ``aptune eval`` (causal LMs: zero-shot multiple choice
    and greedy answers to a few instructions), in a process of its own after the timing."""

    tasks: list[str] = field(default_factory=list)  # multiple-choice tasks (arc-easy, arc-challenge, sciq, mmlu)
    max_samples: int | None = None  # a seeded random subset of each task (None: all items)
    batch_size: int = 16
    threads: int | None = None
    prompts: Path | None = None  # text file, one instruction per line (relative to the plan file)
    max_new_tokens: int = 64
    seed: int = 1234  # of the subsets

    @classmethod
    def from_dict(cls, data: dict | None, where: str, plan_dir: Path) -> "EvaluationSettings | None":
        if not data:
            return None
        known = {"tasks", "max_samples", "batch_size", "threads", "prompts", "max_new_tokens", "seed"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{where}: unknown evaluation keys {sorted(unknown)}; known: {', '.join(sorted(known))}")
        settings = cls(**data)
        settings.tasks = [str(t) for t in settings.tasks]
        if settings.prompts is not None:
            settings.prompts = (plan_dir / settings.prompts).resolve()
            if not settings.prompts.is_file():
                raise FileNotFoundError(f"{where}: evaluation.prompts file {settings.prompts} does not exist")
        if not settings.tasks and settings.prompts is None:
            raise ValueError(f"{where}: evaluation names neither tasks nor prompts")
        return settings


@dataclass
class Variant:
    """One named run of the plan: a config patch and what the report should show for it.

    Attributes:
        name: the run's name (``apt``, ``no_self_distillation``, ...).
        patch: nested mapping of config overrides.
        role: ``method`` (the full method, the baseline of every delta), ``reference`` (full_finetune,
            lora: the denominators) or ``ablation``.
        what: one line saying what changes (from the design table).
        group: variants reported in one table (e.g. the three fixed ranks); defaults to the name.
        reports: metric groups the report shows (see ``METRIC_GROUPS``).
        init_from: name of an earlier variant whose exported model this one starts from (same task and
            seed), e.g. prune-then-tune after a LoRA run; its training cost counts towards this one's.
        paper: what the paper reports for the same ablation (with its table), shown beside the measured effect.
    """

    name: str
    patch: dict
    role: str = "ablation"
    what: str = ""
    group: str | None = None
    reports: list[str] = field(default_factory=lambda: list(METRIC_GROUPS))
    init_from: str | None = None
    paper: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "patch": self.patch, "role": self.role, "what": self.what,
                "group": self.group or self.name, "reports": self.reports, "init_from": self.init_from,
                "paper": self.paper}


@dataclass
class RunSpec:
    """One run to do: a variant on one task with one seed, and its full override tree."""

    variant: Variant
    task: str
    seed: int
    overrides: dict  # nested; applied on top of the plan's base config

    @property
    def run_id(self) -> str:
        return f"{self.variant.name}__{self.task}__seed{self.seed}"


@dataclass
class Plan:
    path: Path
    name: str
    profile: str
    base: Path | None
    variants: dict[str, Variant]
    tasks: list[str]
    seeds: list[int]
    overrides: dict
    task_overrides: dict[str, dict]
    inference: InferenceSettings
    timeout_s: float | None = None
    evaluation: EvaluationSettings | None = None

    def expand(self, only: list[str] | None = None, flag: str = "--only") -> list[RunSpec]:
        """All runs, seed-major then task then variant, so that a whole seed finishes first.

        Args:
            only: variant names to keep (all when None); unknown names are an error.
            flag: the command-line option that gave ``only``, named in that error.
        """
        if only:
            unknown = [name for name in only if name not in self.variants]
            if unknown:
                raise ValueError(f"{flag} names unknown runs {unknown}; the plan has: {', '.join(self.variants)}")
        specs = []
        for seed in self.seeds:
            for task in self.tasks:
                for variant in self.variants.values():
                    if only and variant.name not in only:
                        continue
                    tree = deep_merge(self.overrides, self.task_overrides.get(task, {}))
                    tree = deep_merge(tree, variant.patch)
                    tree = deep_merge(tree, {"data": {"task": task}, "train": {"seed": seed}})
                    specs.append(RunSpec(variant, task, seed, tree))
        return specs

    def run_config(self, spec: RunSpec) -> dict:
        """The run's config file, as ``aptune ablate`` writes it: the plan's base and the run's overrides."""
        return {**({"base": str(self.base)} if self.base is not None else {}), **spec.overrides}


def builds_on(init_from: str | None, teacher_from: dict | None, seed: int) -> list[tuple[str, str, int]]:
    """(plan key, earlier run, its seed) for each run a run of ``seed`` builds on: ``init_from``'s at the same seed,
    ``teacher_from``'s at the seed it names (else the same). The runner reads a variant's ``init_from``; the report
    a result's ``run_info``, which records both (``teacher_from`` only in results made before aptune 1.0, which
    distilled from a saved model)."""
    earlier = [("init_from", init_from, seed)] if init_from else []
    if teacher_from:
        earlier.append(("teacher_from", teacher_from["run"],
                        seed if teacher_from.get("seed") is None else teacher_from["seed"]))
    return earlier


def nest(patch: dict | None, where: str = "patch") -> dict:
    """Turn a patch with dotted keys and/or nested sections into one nested mapping.

    ``{"prune.enabled": False, "train": {"lr": 1e-4}}`` -> ``{"prune": {"enabled": False}, "train": {"lr": 1e-4}}``.
    """
    if patch is None:
        return {}
    if not isinstance(patch, dict):
        raise ValueError(f"{where} must be a mapping of config keys, got {type(patch).__name__}")
    tree: dict = {}
    for key, value in patch.items():
        parts = str(key).split(".")
        if isinstance(value, dict):
            value = nest(value, f"{where}.{key}")
        for part in reversed(parts[1:]):
            value = {part: value}
        tree = deep_merge(tree, {parts[0]: value})
    return tree


def deep_merge(a: dict, b: dict) -> dict:
    """A copy of ``a`` with ``b`` merged in; sections merge, values of ``b`` win."""
    out = copy.deepcopy(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _variant(name: str, entry: Any) -> Variant:
    # An entry is either {patch, role, what, group, reports} or directly the patch (no "patch" key).
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise ValueError(f"run {name!r}: expected a mapping (a patch, or patch/role/what/reports), "
                         f"got {type(entry).__name__}")
    if "patch" not in entry:
        return Variant(name, nest(entry, f"runs.{name}"))
    unknown = set(entry) - _VARIANT_KEYS
    if unknown:
        raise ValueError(f"run {name!r}: unknown keys {sorted(unknown)}; known: {', '.join(sorted(_VARIANT_KEYS))}")
    reports = list(entry.get("reports") or METRIC_GROUPS)
    bad = [r for r in reports if r not in METRIC_GROUPS]
    if bad:
        raise ValueError(f"run {name!r}: unknown metric groups {bad}; known: {', '.join(METRIC_GROUPS)}")
    role = entry.get("role", "ablation")
    if role not in ROLES:
        raise ValueError(f"run {name!r}: role must be one of {', '.join(ROLES)}, got {role!r}")
    patch = nest(entry["patch"], f"runs.{name}.patch")
    return Variant(name, patch, role, str(entry.get("what", "")), entry.get("group"), reports, entry.get("init_from"),
                   str(entry.get("paper", "")))


def load_plan(path: str | Path, profile: str | None = None) -> Plan:
    """Read a plan file and select a profile (the plan's ``default_profile`` when None).

    Raises:
        FileNotFoundError: the plan or its base config does not exist.
        ValueError: unknown keys, an unknown profile, or malformed runs.
    """
    path = shipped_configs.resolve(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a plan must be a mapping")
    unknown = set(data) - _PLAN_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown plan keys {sorted(unknown)}; known: {', '.join(sorted(_PLAN_KEYS))}")
    if not data.get("runs"):
        raise ValueError(f"{path}: the plan names no runs")
    base = (path.parent / data["base"]).resolve() if data.get("base") else None
    if base is not None and not base.exists():
        raise FileNotFoundError(f"{path}: base config {base} does not exist")

    profiles = data.get("profiles") or {}
    profile = profile or data.get("default_profile")
    if profile is None:
        chosen: dict = {}
        profile = "default"
    elif profile in profiles:
        chosen = profiles[profile] or {}
        unknown = set(chosen) - _PROFILE_KEYS
        if unknown:
            raise ValueError(f"{path}: profile {profile!r} has unknown keys {sorted(unknown)}; known: "
                             f"{', '.join(sorted(_PROFILE_KEYS))}")
    else:
        raise ValueError(f"{path}: no profile {profile!r}; the plan has: {', '.join(profiles) or 'none'}")

    def pick(key, default):
        # a profile's value replaces the plan's top-level one
        return chosen[key] if key in chosen else data.get(key, default)

    tasks = [str(t) for t in pick("tasks", ["sst2"])]
    seeds = [int(s) for s in pick("seeds", [42])]
    task_overrides = {str(t): nest(p, f"task_overrides.{t}") for t, p in (pick("task_overrides", {}) or {}).items()}
    overrides = deep_merge(nest(data.get("overrides"), "overrides"), nest(chosen.get("overrides"), "overrides"))
    variants = {str(name): _variant(str(name), entry) for name, entry in data["runs"].items()}
    order = list(variants)
    for variant in variants.values():
        for key, earlier in (("init_from", variant.init_from),):
            if earlier is not None and (earlier not in variants or order.index(earlier) >= order.index(variant.name)):
                raise ValueError(f"{path}: run {variant.name!r} has {key} {earlier!r}, which must name a run listed "
                                 f"before it; runs: {', '.join(order)}")
    timeout = pick("timeout_s", None)
    return Plan(path=path, name=str(data.get("name") or path.stem), profile=profile, base=base, variants=variants,
                tasks=tasks, seeds=seeds, overrides=overrides, task_overrides=task_overrides,
                inference=InferenceSettings.from_dict(pick("inference", None), f"{path} profile {profile}"),
                timeout_s=float(timeout) if timeout else None,
                evaluation=EvaluationSettings.from_dict(pick("evaluation", None), f"{path} profile {profile}",
                                                        path.parent))
