"""Config values are checked when a config is read: types, ranges, choices and the pruning schedule, with the key
(and, for a file, the file) in every message. Nothing here trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aptune.ablation.plan import load_plan
from aptune.ablation.runner import with_earlier_exports
from aptune.config import RunConfig, TrainConfig, load_config, override_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SST2 = CONFIGS / "minilm" / "sst2.yaml"


def _refused(overrides: list[str], config=SST2) -> str:
    with pytest.raises(ValueError) as caught:
        load_config(config, overrides)
    return str(caught.value)


def test_a_whole_number_key_refuses_a_fraction_instead_of_cutting_it():
    assert _refused(["train.steps=1.5"]) == "train.steps must be a whole number; got 1.5"
    assert load_config(SST2, ["train.steps=2000.0"]).train.steps == 2000  # integral floats are whole numbers
    assert "train.steps must be a whole number; got True" in _refused(["train.steps=true"])


@pytest.mark.parametrize("override, message", [
    ("adapter.rank=-2", "adapter.rank must be >= 0; got -2"),
    ("train.lr=-1", "train.lr must be > 0; got -1.0"),
    ("prune.round_to=0", "prune.round_to must be >= 1; got 0"),
    ("prune.end_fraction=2", "prune.end_fraction must lie in (0, 1]; got 2.0"),
    ("prune.density=0", "prune.density must lie in (0, 1]; got 0.0"),
    ("train.batch_size=0", "train.batch_size must be >= 1; got 0"),
    ("train.weight_decay=-0.1", "train.weight_decay must be >= 0; got -0.1"),
    ("train.warmup_ratio=1", "train.warmup_ratio must lie in [0, 1); got 1.0"),
    ("train.grad_clip=0", "train.grad_clip must be > 0; got 0.0"),
    ("train.eval_every=0", "train.eval_every must be >= 1; got 0"),
    ("train.log_every=0", "train.log_every must be >= 1; got 0"),
    ("train.checkpoint_every=-1", "train.checkpoint_every must be >= 0; got -1"),
    ("train.threads=0", "train.threads must be >= 1 (or null); got 0"),
    ("prune.num_steps=0", "prune.num_steps must be >= 1; got 0"),
    ("prune.start_step=-1", "prune.start_step must be >= 0 (or null); got -1"),
    ("prune.start_fraction=1", "prune.start_fraction must lie in [0, 1); got 1.0"),
    ("prune.warmup_fraction=1", "prune.warmup_fraction must lie in [0, 1); got 1.0"),
    ("prune.mask_lr=0", "prune.mask_lr must lie in (0, 1]; got 0.0"),
    ("prune.calibration_batches=0", "prune.calibration_batches must be >= 1; got 0"),
    ("prune.salience=gradient",
     "prune.salience must be one of apt, weight_gradient, magnitude, random; got 'gradient'"),
    ("rank.budget_ratio=0.5", "rank.budget_ratio must be >= 1; got 0.5"),
    ("rank.max_rank_ratio=0.9", "rank.max_rank_ratio must be >= 1; got 0.9"),
    ("rank.strategy=greedy", "rank.strategy must be one of salience, uniform, none; got 'greedy'"),
    ("adapter.scaling=0", "adapter.scaling must be > 0; got 0.0"),
    ("adapter.targets=q,query", "adapter.targets must be a list of q, k, v, o, up, gate, down, head; got ['q', 'query']"),
    ("data.max_length=0", "data.max_length must be >= 1; got 0"),
    ("data.max_train_samples=0", "data.max_train_samples must be >= 1 (or null); got 0"),
    ("data.max_eval_samples=-5", "data.max_eval_samples must be >= 1 (or null); got -5"),
    ("model.head=classifier",
     "model.head must be one of base, sequence-classification, causal-lm, seq2seq-lm; got 'classifier'"),
    ("model.name=", "model.name cannot be null; give a string"),
    ("train.lr=.nan", "train.lr must be a finite number; got nan"),
    ("train.resume=maybe", "train.resume must be true or false; got 'maybe'"),
    ("distill.enabled=maybe", "distill.enabled must be true or false; got 'maybe'"),
    ("recover.weight=1.5", "recover.weight must lie in [0, 1]; got 1.5"),
    ("train.seed=-1", "train.seed must be >= 0; got -1"),
])
def test_out_of_range_values_are_refused_with_the_key(override, message):
    assert message in _refused([override])


def test_null_is_accepted_where_the_field_allows_it():
    config = load_config(SST2, ["train.threads=null", "data.max_train_samples=null", "prune.kurtosis=null"])
    assert (config.train.threads, config.data.max_train_samples, config.prune.kurtosis) == (None, None, None)


def test_values_set_in_python_are_checked_too():
    with pytest.raises(ValueError, match=r"^train\.steps must be a whole number; got 1\.5$"):
        RunConfig(train=TrainConfig(steps=1.5))
    config = RunConfig()
    config.adapter.rank = -2
    with pytest.raises(ValueError, match=r"^adapter\.rank must be >= 0; got -2$"):
        config.validate()


def test_a_start_past_the_run_says_what_to_set():
    message = _refused(["train.steps=20", "prune.start_step=100"])
    assert message == ("prune.start_step=100 is past train.steps=20; set prune.start_step below 20; the shortest run "
                       "that holds this schedule has train.steps=180")
    assert load_config(SST2, ["train.steps=180", "prune.start_step=100"]).train.steps == 180  # the named length fits
    assert _refused(["train.steps=179", "prune.start_step=100"])
    assert load_config(SST2, ["train.steps=20", "prune.start_step=5", "prune.num_steps=2"]).train.steps == 20


def test_a_window_that_ends_before_it_starts_says_how_to_fix_it():
    message = _refused(["train.steps=200", "prune.start_step=100", "prune.end_fraction=0.4"])  # ends at 80
    assert message == ("the pruning window ends at step 80 (prune.end_fraction=0.4 x train.steps=200), not after its "
                       "start at step 100 (prune.start_step=100); set prune.end_fraction to at least 0.505 or start "
                       "before step 80; the shortest run that holds this schedule has train.steps=270")
    fixed = load_config(SST2, ["train.steps=200", "prune.start_step=100", "prune.end_fraction=0.505",
                               "prune.num_steps=1"])
    assert fixed.prune.end_fraction == 0.505  # the suggested value works


def test_more_pruning_steps_than_the_window_holds_are_refused():
    overrides = ["train.steps=200", "prune.start_step=100", "prune.end_fraction=0.52"]  # (100, 104]: 4 for 8
    message = _refused(overrides)
    assert message.startswith("prune.num_steps=8 pruning steps do not fit in the pruning window (100, 104]")
    assert "holds 4 steps; set prune.num_steps to at most 4" in message
    assert load_config(SST2, [*overrides, "prune.num_steps=4"]).prune.num_steps == 4


def test_no_schedule_is_checked_without_training_steps():
    config = load_config(CONFIGS / "smollm2" / "alpaca.yaml", ["train.steps=0"])  # one cut, then export
    assert config.train.steps == 0 and config.prune.start_step == 20


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: {name: minilm}\ntrain: {steps: 10\nprune: {density: 0.5}\n")
    with pytest.raises(ValueError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:")
    assert "not valid YAML" in str(caught.value)


def test_a_bad_value_names_the_file_of_the_base_chain_that_holds_it(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"train": {"steps": 300, "lr": -1}}))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"base": "base.yaml", "prune": {"start_step": 10}}))
    with pytest.raises(ValueError, match=r"must be > 0"):
        load_config(child)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"train": {"steps": 1.5}}))
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'base.yaml'}: train\.steps must be a whole number"):
        load_config(child)
    child.write_text(yaml.safe_dump({"base": "missing.yaml"}))
    with pytest.raises(FileNotFoundError, match=rf"^{child}: its base file 'missing.yaml'"):
        load_config(child)


def _plans_and_configs():
    for path in sorted(CONFIGS.rglob("*.yaml")):
        yield path, "runs" in (yaml.safe_load(path.read_text()) or {})


def _named_files(config: RunConfig) -> list[str]:
    """The repository files a config reads besides the model: its data files."""
    named = [config.data.train_file, config.data.eval_file, config.data.extra_train_file]
    return [name for name in named if name]


def test_every_shipped_config_and_every_planned_run_loads_and_its_files_exist():
    loaded, files = 0, set()
    for path, is_plan in _plans_and_configs():
        if not is_plan:
            files.update(_named_files(load_config(path)))
            loaded += 1
            continue
        profiles = yaml.safe_load(path.read_text()).get("profiles") or {}
        for profile in [None, *profiles]:
            plan = load_plan(path, profile)
            for spec in plan.expand():
                # as the runner writes it: a run built on an earlier one names that run's export (init_from)
                overrides = with_earlier_exports(spec, Path("runs"))
                files.update(_named_files(override_config(load_config(plan.base), overrides)))
                loaded += 1
    assert loaded > 20
    # paths are relative to the repository root, where the README's commands run
    root = CONFIGS.parent
    assert files and not [name for name in sorted(files) if not (root / name).is_file()]


def test_a_config_written_before_1_0_loads_and_a_removed_option_set_otherwise_is_refused():
    """The main job's resolved config of commit cdbba4d names every key of its day: the removed ones at the values 1.0
    always uses are read as before; a removed option set to anything else says what became of it."""
    old = CONFIGS.parent / "results" / "minilm_sst2" / "apt-cdbba4d" / "config.yaml"
    assert "kl_scale" in old.read_text()
    now = load_config("minilm/sst2_paper", [f"output_dir={load_config(old).output_dir}"])
    # the start step it names is the start fraction the config now gives: the same window
    assert load_config(old).prune.window(1000) == now.prune.window(1000)
    assert load_config(old) == override_config(now, {"prune": {"start_step": 100, "start_fraction": 0.2}})
    with pytest.raises(ValueError, match=r"^distill.teacher='live' was removed in aptune 1.0, which always runs as if "
                                         r"it were best: .*drop the key"):
        load_config(None, ["distill.teacher=live"])
    with pytest.raises(ValueError, match=r"prune.head_floor=1.0 was removed in aptune 1.0"):
        load_config(None, ["prune.head_floor=1.0"])


def test_the_official_distillation_options_need_a_teacher_and_a_retraining_after_the_last_cut():
    assert "set distill.enabled=true and prune.enabled=true" in _refused(["distill.refresh=decay_start"])
    assert "not after the last pruning step (600): choose a fraction above prune.end_fraction=0.6" in _refused(
        ["distill.enabled=true", "distill.retrain_from=0.5"])
