"""GLUE tasks on the real shared files: row counts, labels, splits, resolution order, malformed files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import aptune.data.glue as glue
import aptune.data.resolve as resolve
from aptune.data import DataFormatError, DataNotFoundError, find_shared_data_dir, load_glue_examples, load_glue_task
from aptune.data.glue import glue_task_spec, read_glue_file
from aptune.eval.metrics import compute_metrics

# Rows (train, dev) and dev label balance per id, from the data README (= the official GLUE release).
COUNTS = {
    "sst2": (67349, 872, {1: 444, 0: 428}),
    "cola": (8551, 1043, {1: 721, 0: 322}),
    "mrpc": (3668, 408, {1: 279, 0: 129}),
    "rte": (2490, 277, {0: 146, 1: 131}),
    "stsb": (5749, 1500, None),
}


pytestmark = pytest.mark.usefixtures("no_env_data")


def test_shared_data_is_found_beside_the_checkout():
    shared = find_shared_data_dir()
    assert shared is not None, "the shared data folder must be at ../shared/data beside the checkout"
    assert (shared / "SST-2" / "dev.tsv").is_file()


@pytest.mark.parametrize("name", list(COUNTS))
def test_row_counts_and_label_balance(name):
    train_rows, dev_rows, balance = COUNTS[name]
    splits = load_glue_examples(name)
    assert splits.source.kind == "shared"
    assert (len(splits.train), len(splits.eval)) == (train_rows, dev_rows)
    if balance is not None:
        assert dict(Counter(example.label for example in splits.eval)) == balance
    else:  # STS-B: scores in [0, 5], dev mean 2.36 as documented
        scores = [example.label for example in splits.eval]
        assert min(scores) >= 0 and max(scores) <= 5
        assert sum(scores) / len(scores) == pytest.approx(2.36, abs=0.01)
    assert splits.spec.num_labels == (1 if name == "stsb" else 2)


def test_pair_tasks_have_two_texts_and_mrpc_bom_is_handled():
    mrpc = load_glue_examples("MRPC", include_train=False)
    first = mrpc.eval[0]
    assert first.text_a.startswith("He said the foodservice pie business")
    assert first.text_b.startswith('" The foodservice pie business')  # unbalanced quote kept (QUOTE_NONE)
    assert first.label == 1
    assert load_glue_examples("sst-2", include_train=False).eval[0].text_b is None


def test_qnli_dev_is_split_into_train_and_eval_with_a_seed():
    first = load_glue_examples("qnli", seed=0)
    assert (len(first.train), len(first.eval)) == (4370, 1093)
    assert first.notes and "train.tsv not found" in first.notes[0]
    origins = {example.origin for example in first.train}
    assert not origins & {example.origin for example in first.eval}
    assert len(origins) + len(first.eval) == 5463
    again = load_glue_examples("qnli", seed=0)
    assert [e.origin for e in again.eval] == [e.origin for e in first.eval]
    other = load_glue_examples("qnli", seed=1)
    assert [e.origin for e in other.eval] != [e.origin for e in first.eval]
    assert Counter(e.label for e in first.eval + first.train) == {1: 2761, 0: 2702}


def test_task_metrics_and_names():
    assert glue_task_spec("MRPC").metric_names == ("f1", "accuracy")
    assert glue_task_spec("CoLA").metric_names == ("mcc",)
    assert glue_task_spec("STS-B").metric_names == ("pearson", "spearman")
    assert glue_task_spec("sst_2").primary_metric == "accuracy"
    assert glue_task_spec("mnli-mm").eval_file == "dev_mismatched.tsv"
    with pytest.raises(ValueError, match="unknown GLUE task"):
        glue_task_spec("wnli")


def test_load_glue_task_tokenizes_subsamples_and_scores(minilm_tokenizer):
    task = load_glue_task("rte", minilm_tokenizer, max_length=32, max_train_samples=50, max_eval_samples=20, seed=3)
    assert (len(task.train), len(task.eval)) == (50, 20)
    assert all(len(example["input_ids"]) <= 32 for example in task.train)
    assert set(task.train[0]) >= {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert task.num_labels == 2 and not task.is_regression and task.primary_metric == "accuracy"
    same = load_glue_task("rte", minilm_tokenizer, max_length=32, max_train_samples=50, max_eval_samples=20, seed=3)
    assert [e.origin for e in same.train_examples] == [e.origin for e in task.train_examples]
    labels = [example["labels"] for example in task.eval]
    assert compute_metrics(task.metric_names, labels, labels, is_regression=task.is_regression) == {"accuracy": 1.0}
    stsb = load_glue_task("stsb", minilm_tokenizer, max_eval_samples=10, include_train=False)
    assert stsb.is_regression and stsb.num_labels == 1 and not stsb.train
    assert isinstance(stsb.eval[0]["labels"], float)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from aptune.models import load_tokenizer

    return load_tokenizer("minilm")


# ------------------------------------------------------------------------------- resolution order


def _write_sst2(root: Path, rows: int) -> None:
    folder = root / "SST-2"
    folder.mkdir(parents=True)
    body = "".join(f"sentence {i} \t{i % 2}\n" for i in range(rows))
    (folder / "train.tsv").write_text("sentence\tlabel\n" + body)
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + body)


def test_explicit_dir_then_env_then_shared(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    _write_sst2(explicit, 3)
    _write_sst2(env, 5)
    monkeypatch.setenv("APTUNE_DATA", str(env))
    chosen = load_glue_examples("sst2", data_dir=explicit)
    assert chosen.source.kind == "data_dir" and len(chosen.eval) == 3
    chosen = load_glue_examples("sst2")
    assert chosen.source.kind == "env" and len(chosen.eval) == 5
    # A given folder is the only place read: one that does not exist is an error, not $APTUNE_DATA's data.
    with pytest.raises(DataNotFoundError, match="nothing-here .*does not exist"):
        load_glue_examples("sst2", data_dir=tmp_path / "nothing-here")
    monkeypatch.delenv("APTUNE_DATA")
    assert load_glue_examples("sst2", include_train=False).source.kind == "shared"
    # The task folder itself may be given.
    assert len(load_glue_examples("sst2", data_dir=explicit / "SST-2").eval) == 3


def test_error_names_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.setattr(resolve, "find_shared_data_dir", lambda: None)
    monkeypatch.setenv("APTUNE_DATA", str(tmp_path))

    def no_datasets(*args, **kwargs):
        raise ImportError("No module named 'datasets'")

    monkeypatch.setattr(glue, "load_hub_dataset", no_datasets)
    with pytest.raises(DataNotFoundError) as caught:
        load_glue_examples("rte")
    message = str(caught.value)
    assert "no data folder given (--data-dir / data.data_dir)" in message
    assert f"$APTUNE_DATA ({tmp_path}): {tmp_path / 'RTE' / 'dev.tsv'} not found" in message
    assert "shared data folder beside the checkout" in message
    assert "nyu-mll/glue:rte" in message and "datasets" in message
    assert isinstance(caught.value, FileNotFoundError)  # the CLI prints it as a clean error


def test_hub_is_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(resolve, "find_shared_data_dir", lambda: None)
    rows = [{"sentence1": "a", "sentence2": "b", "label": 1}, {"sentence1": "c", "sentence2": "d", "label": 0}]
    monkeypatch.setattr(glue, "load_hub_dataset", lambda path, name, split: rows)
    splits = load_glue_examples("rte")
    assert splits.source.kind == "hub" and splits.source.location == "nyu-mll/glue:rte"
    assert [example.label for example in splits.eval] == [1, 0]


def test_a_given_folder_must_hold_every_split_needed(tmp_path, monkeypatch):
    # the shared data has SST-2, and the hub is one call away: neither may stand in for the user's folder
    monkeypatch.setattr(glue, "load_hub_dataset", lambda *a, **k: pytest.fail("the hub must not be asked"))
    only_train, only_dev = tmp_path / "only-train", tmp_path / "only-dev"
    _write_sst2(only_train, 4)
    (only_train / "SST-2" / "dev.tsv").unlink()
    with pytest.raises(DataNotFoundError) as caught:
        load_glue_examples("sst2", data_dir=only_train)
    assert f"the data folder {only_train} (--data-dir / data.data_dir) lacks SST-2/dev.tsv" in str(caught.value)
    assert str(only_train / "SST-2" / "dev.tsv") in str(caught.value)

    _write_sst2(only_dev, 4)
    (only_dev / "SST-2" / "train.tsv").unlink()
    with pytest.raises(DataNotFoundError, match=r"lacks SST-2/train\.tsv"):  # not a silent split of dev
        load_glue_examples("sst2", data_dir=only_dev)
    evaluated = load_glue_examples("sst2", data_dir=only_dev, include_train=False)  # evaluation needs dev only
    assert (len(evaluated.train), len(evaluated.eval), evaluated.notes) == (0, 4, [])
    assert evaluated.source.describe() == f"the given data folder ({only_dev / 'SST-2' / 'dev.tsv'})"


def test_the_dev_split_fallback_happens_only_without_a_folder_and_says_so(tmp_path):
    shared = find_shared_data_dir()
    splits = load_glue_examples("qnli")  # the shared data has no QNLI train.tsv
    assert splits.source.kind == "shared" and splits.notes
    printed = f"from {splits.source}"  # as the training recipe prints it
    assert printed.startswith(f"from the shared data folder beside the checkout ({shared / 'QNLI'}); ")
    assert "train.tsv not found: split dev.tsv (5463 rows) with seed 0 into 4370 train / 1093 eval" in printed
    with pytest.raises(DataNotFoundError, match=r"lacks QNLI/train\.tsv"):
        load_glue_examples("qnli", data_dir=shared)


# -------------------------------------------------------------------------------- malformed files


def _line_error(path: Path, line: int, spec_name: str, match: str) -> None:
    with pytest.raises(DataFormatError, match=match) as caught:
        read_glue_file(glue_task_spec(spec_name), path)
    assert str(path) in str(caught.value) and caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}:")


def test_missing_column_names_file_and_header_line(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("index\tsentence1\tsentence2\n0\ta\tb\n")
    _line_error(path, 1, "rte", "missing column.*'label'")


def test_bad_label_names_file_and_line(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tmaybe\n")
    _line_error(path, 3, "rte", "label 'maybe'.*not one of 'entailment', 'not_entailment'")
    scores = tmp_path / "scores.tsv"
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    scores.write_text(header + "0\tg\tf\ty\t0\tn\tn\ta\tb\t4.0\n1\tg\tf\ty\t1\tn\tn\ta\tb\thigh\n")
    _line_error(scores, 3, "stsb", "score 'high'")


def test_truncated_line_names_file_and_line(tmp_path):
    path = tmp_path / "dev.tsv"
    lines = (Path(find_shared_data_dir()) / "MRPC" / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()
    # Keep the header and 9 rows, then cut the 10th row in its second sentence... and drop its tab.
    cut = lines[10].rsplit("\t", 1)[0][:-5]
    path.write_text("\n".join(lines[:10] + [cut]) + "\n", encoding="utf-8")
    _line_error(path, 11, "mrpc", "expected 5 tab-separated fields.*found 4")


def test_malformed_file_error_reaches_load_glue_task(tmp_path):
    folder = tmp_path / "CoLA"
    folder.mkdir()
    (folder / "train.tsv").write_text("gj04\t1\t\tGood sentence.\n")
    (folder / "dev.tsv").write_text("gj04\t1\t\tGood sentence.\ngj04\t7\t*\tBad label.\n")
    with pytest.raises(DataFormatError, match=r"dev\.tsv:2: label '7'"):
        load_glue_examples("cola", data_dir=tmp_path)


def test_data_data_dir_in_a_config_is_as_strict_as_the_flag(tmp_path, minilm_tokenizer):
    from aptune.config import load_config
    from aptune.train.tasks import load_train_task

    with pytest.raises(DataNotFoundError, match=r"GLUE SST-2: the data folder .*no-such-dir .*does not exist"):
        load_train_task(load_config(None, [f"data.data_dir={tmp_path / 'no-such-dir'}"]), minilm_tokenizer)
