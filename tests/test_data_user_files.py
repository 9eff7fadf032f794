"""Users' own data files: CSV / TSV / JSON Lines / Parquet tables and instruction records, end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import transformers

from aptune.config import load_config
from aptune.data import DataFormatError, InstructionFields, TableColumns, load_user_classification
from aptune.data.instruct import IGNORE_INDEX
from aptune.data.resolve import find_shared_data_dir
from aptune.data.user_files import load_user_instruction_data
from aptune.models import load_tokenizer
from aptune.train import train
from aptune.train.tasks import load_train_task

TINY_TRAINING = ["data.max_length=32", "train.steps=12", "train.batch_size=8", "train.eval_every=6",
                 "train.log_every=4", "prune.density=0.5", "prune.start_step=2", "prune.num_steps=2",
                 "prune.end_fraction=0.75", "prune.warmup_fraction=0", "prune.mask_lr=0.5", "train.lr=1e-3",
                 "train.threads=1"]
SENTIMENT = {"0": "neg", "1": "pos"}


def _sst2_rows(split: str, count: int) -> list[tuple[str, str]]:
    """The first ``count`` (sentence, label) rows of a GLUE SST-2 file."""
    with (find_shared_data_dir() / "SST-2" / f"{split}.tsv").open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)  # header
        return [(sentence.strip(), label) for sentence, label in (next(reader) for _ in range(count))]


def _write_csv(path: Path, header: list[str], rows: list) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def sentiment_csvs(tmp_path_factory):
    """SST-2 rows as the user's own CSVs: columns ``review``/``sentiment``, labels ``neg``/``pos``."""
    folder = tmp_path_factory.mktemp("sentiment")
    train_rows = [(text, SENTIMENT[label]) for text, label in _sst2_rows("train", 200)]
    eval_rows = [(text, SENTIMENT[label]) for text, label in _sst2_rows("dev", 48)]
    return (_write_csv(folder / "reviews.csv", ["review", "sentiment"], train_rows),
            _write_csv(folder / "reviews_dev.csv", ["review", "sentiment"], eval_rows))


def test_a_users_csv_trains_and_the_export_names_its_classes(tiny_base, sentiment_csvs, tmp_path):
    train_file, eval_file = sentiment_csvs
    run = tmp_path / "run"
    summary = train(load_config(None, [f"output_dir={run}", f"model.name={tiny_base}", f"data.train_file={train_file}",
                                       f"data.eval_file={eval_file}", "data.text_column=review",
                                       "data.label_column=sentiment", *TINY_TRAINING]))
    assert summary["task"] == "reviews" and summary["num_labels"] == 2
    assert summary["primary_metric"] == "accuracy"
    assert summary["final"]["n"] == 48 and 0.0 <= summary["final"]["f1"] <= 1.0  # two classes: F1 of "pos" too
    export = Path(summary["export"])
    assert json.loads((export / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    reloaded = transformers.AutoConfig.from_pretrained(export, trust_remote_code=True)
    assert reloaded.id2label == {0: "neg", 1: "pos"} and reloaded.label2id == {"neg": 0, "pos": 1}


def test_labels_are_the_sorted_train_labels_and_text_is_tokenized(sentiment_csvs, minilm_tokenizer):
    train_file, eval_file = sentiment_csvs
    data = load_user_classification(train_file, eval_file, minilm_tokenizer, 32, TableColumns("review", "sentiment"))
    assert data.label_names == ("neg", "pos") and not data.is_regression and data.num_labels == 2
    first_text, first_label = _sst2_rows("train", 1)[0]
    assert data.train[0]["labels"] == int(first_label)
    assert data.train[0]["input_ids"] == minilm_tokenizer(first_text, truncation=True, max_length=32)["input_ids"]
    assert (len(data.train), len(data.eval)) == (200, 48) and not data.notes


def test_without_an_eval_file_a_seeded_tenth_is_held_out(sentiment_csvs, minilm_tokenizer, caplog):
    train_file, _ = sentiment_csvs
    columns = TableColumns("review", "sentiment")
    data = load_user_classification(train_file, None, minilm_tokenizer, 32, columns, seed=3)
    again = load_user_classification(train_file, None, minilm_tokenizer, 32, columns, seed=3)
    assert (len(data.train), len(data.eval)) == (180, 20)
    assert [e.origin for e in data.eval_examples] == [e.origin for e in again.eval_examples]
    assert not {e.origin for e in data.eval_examples} & {e.origin for e in data.train_examples}
    assert "held out 20 of the 200 rows of reviews.csv" in data.notes[0]
    assert "held out 20" in caplog.text


def test_a_row_without_a_label_is_refused_naming_the_file_and_row(tmp_path, minilm_tokenizer):
    # row 2 spans two lines (a quoted line break), so the empty label of row 4 sits on line 6
    path = _write_csv(tmp_path / "labels.csv", ["text", "label"],
                      [["good", "pos"], ["two\nlines", "neg"], ["fine", "pos"], ["no label here", ""], ["bad", "neg"]])
    with pytest.raises(DataFormatError) as caught:
        load_user_classification(path, None, minilm_tokenizer)
    assert str(caught.value).startswith(f"{path}:6: row 4 (line 6 of the file): ")
    assert "label in column 'label' is missing or empty" in str(caught.value)


def test_a_row_without_text_is_refused(tmp_path, minilm_tokenizer):
    path = _write_csv(tmp_path / "texts.csv", ["text", "label"], [["good", "pos"], ["  ", "neg"], ["bad", "neg"]])
    with pytest.raises(DataFormatError, match=r"texts\.csv:3: row 2 .*text in column 'text' is missing or empty"):
        load_user_classification(path, None, minilm_tokenizer)


def test_a_row_with_too_many_fields_is_refused_not_shifted(tmp_path, minilm_tokenizer):
    # pandas would silently drop the extra field or take the first column as an index
    path = tmp_path / "ragged.csv"
    path.write_text("text,label\ngood,pos\nbad, really bad,neg\nfine,pos\n")
    with pytest.raises(DataFormatError, match=r"ragged\.csv:3: row 2 \(line 3 of the file\): expected 2 fields "
                                              r"\(text, label\), found 3"):
        load_user_classification(path, None, minilm_tokenizer)


def test_an_unknown_label_column_lists_the_columns(sentiment_csvs, minilm_tokenizer):
    train_file, _ = sentiment_csvs
    with pytest.raises(DataFormatError) as caught:
        load_user_classification(train_file, None, minilm_tokenizer, columns=TableColumns("review", "stars"))
    message = str(caught.value)
    assert str(train_file) in message and "no column 'stars' (data.label_column)" in message
    assert "'review', 'sentiment'" in message


def test_an_eval_label_unseen_in_train_is_refused(tmp_path, minilm_tokenizer):
    train_file = _write_csv(tmp_path / "t.csv", ["text", "label"], [["a", "pos"], ["b", "neg"], ["c", "pos"]])
    eval_file = _write_csv(tmp_path / "e.csv", ["text", "label"], [["d", "neg"], ["e", "neutral"]])
    with pytest.raises(DataFormatError, match=r"e\.csv:3: row 2 .*'neutral'.*one of the train file's labels: 'neg', "
                                              r"'pos'"):
        load_user_classification(train_file, eval_file, minilm_tokenizer)


def test_missing_files_and_unknown_formats_are_named(tmp_path, minilm_tokenizer):
    with pytest.raises(FileNotFoundError, match=r"data\.train_file: .*nowhere\.csv does not exist"):
        load_user_classification(tmp_path / "nowhere.csv", None, minilm_tokenizer)
    (tmp_path / "table.xlsx").write_text("x")
    with pytest.raises(ValueError, match=r"table\.xlsx.*'\.xlsx'.*\.csv, \.tsv, \.jsonl"):
        load_user_classification(tmp_path / "table.xlsx", None, minilm_tokenizer)
    with pytest.raises(ValueError, match="data.eval_file.*needs data.train_file"):
        load_config(None, [f"data.eval_file={tmp_path / 'dev.csv'}"])


def test_tsv_jsonl_and_parquet_read_the_same_table(tmp_path, minilm_tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [("a fine film", "good"), ("NA", "bad"), ("dull , long", "bad"), ("loved it", "good")]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows))
    jsonl = _write_jsonl(tmp_path / "t.jsonl", [{"text": text, "label": label} for text, label in rows])
    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": [r[0] for r in rows], "label": [r[1] for r in rows]}), parquet)
    loaded = [load_user_classification(path, path, minilm_tokenizer, 16) for path in (tsv, jsonl, parquet)]
    expected = [minilm_tokenizer(text)["input_ids"] for text, _ in rows]
    for data in loaded:
        assert data.label_names == ("bad", "good")  # "NA" is a text, not a missing value
        assert [f["input_ids"] for f in data.train] == expected
        assert [f["labels"] for f in data.train] == [1, 0, 0, 1]


def test_whole_numbers_are_classes_and_other_numbers_a_regression(tmp_path, minilm_tokenizer):
    classes = _write_jsonl(tmp_path / "stars.jsonl", [{"text": f"t{i}", "label": i % 3 * 5} for i in range(12)])
    config = load_config(None, [f"data.train_file={classes}", f"data.eval_file={classes}"])
    task = load_train_task(config, minilm_tokenizer)
    assert task.label_names == ("0", "5", "10") and task.num_labels == 3  # sorted as numbers
    assert task.primary_metric == "accuracy"

    scores = _write_csv(tmp_path / "scores.csv", ["sentence", "other", "score"],
                        [[f"s{i}", f"o{i}", i / 4] for i in range(12)])
    config = load_config(None, [f"data.train_file={scores}", f"data.eval_file={scores}", "data.text_column=sentence",
                                "data.text_pair_column=other", "data.label_column=score"])
    task = load_train_task(config, minilm_tokenizer)
    assert (task.num_labels, task.primary_metric, task.label_names) == (1, "pearson", ())
    assert [f["labels"] for f in task.train] == [i / 4 for i in range(12)]
    first = minilm_tokenizer("s0", "o0")["input_ids"]
    assert task.train[0]["input_ids"] == first  # the pair column is the second segment


def test_data_metric_chooses_the_primary_metric(sentiment_csvs, minilm_tokenizer):
    train_file, eval_file = sentiment_csvs
    base = [f"data.train_file={train_file}", f"data.eval_file={eval_file}", "data.text_column=review",
            "data.label_column=sentiment", "data.max_train_samples=8", "data.max_eval_samples=8"]
    task = load_train_task(load_config(None, [*base, "data.metric=mcc"]), minilm_tokenizer)
    assert task.primary_metric == "mcc"
    with pytest.raises(ValueError, match="'pearson' is not a metric for class labels; choose one of accuracy, f1, mcc"):
        load_train_task(load_config(None, [*base, "data.metric=pearson"]), minilm_tokenizer)


def _split_at_loss(feature, tokenizer) -> tuple[str, str]:
    """(context, answer): the tokens before and from the first one with loss, decoded; checks that the loss
    tokens form one block at the end whose labels are the tokens themselves."""
    labels = feature["labels"]
    first = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert all(label == IGNORE_INDEX for label in labels[:first])
    assert labels[first:] == feature["input_ids"][first:]
    return tokenizer.decode(feature["input_ids"][:first]), tokenizer.decode(feature["input_ids"][first:])


def test_instruction_records_with_custom_field_names(tmp_path, smollm2_tokenizer):
    records = [{"prompt": f"Add {i} and {i}.", "context": "" if i % 2 else "Be brief.", "completion": str(2 * i)}
               for i in range(10)]
    path = _write_jsonl(tmp_path / "sums.jsonl", records)
    fields = InstructionFields(instruction="prompt", input="context", output="completion")
    data = load_user_instruction_data(path, path, smollm2_tokenizer, 128, fields)
    assert len(data.train) == 10 and data.prompt_style == "chat_template"
    for feature, record in zip(data.train, records):
        prompt, answer = _split_at_loss(feature, smollm2_tokenizer)
        assert answer == record["completion"] + "<|im_end|>\n"
        assert record["prompt"] in prompt and record["context"] in prompt
    with pytest.raises(DataFormatError, match=r"sums\.jsonl: no column 'instruction' \(data\.instruction_field\)"):
        load_user_instruction_data(path, path, smollm2_tokenizer, 128)


def test_chat_messages_put_the_loss_on_the_final_answer(tmp_path, smollm2_tokenizer):
    conversations = [{"messages": [{"role": "system", "content": "You answer in one word."},
                                   {"role": "user", "content": f"Colour of item {i}?"},
                                   {"role": "assistant", "content": "Red."},
                                   {"role": "user", "content": "And the next one?"},
                                   {"role": "assistant", "content": f"Blue{i}."}]} for i in range(10)]
    path = _write_jsonl(tmp_path / "chats.jsonl", conversations)
    config = load_config(None, ["model.head=causal-lm", f"data.train_file={path}", "data.messages_field=messages",
                                "data.max_length=256"])
    task = load_train_task(config, smollm2_tokenizer)
    assert (len(task.train), len(task.eval), task.primary_metric) == (9, 1, "eval_loss")
    for feature in task.train + task.eval:
        context, answer = _split_at_loss(feature, smollm2_tokenizer)
        assert answer.startswith("Blue") and answer.endswith(".<|im_end|>\n")
        assert "Red." in context and "You answer in one word." in context  # earlier turns: context, no loss
    bad = _write_jsonl(tmp_path / "bad.jsonl", [conversations[0], {"messages": conversations[0]["messages"][:2]}])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: row 2 .*last message .* must be a non-empty assistant"):
        load_user_instruction_data(bad, bad, smollm2_tokenizer, 256, InstructionFields(messages="messages"))
