"""Multiple-choice sets on the real shared files: counts, answers, prompts, malformed files."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from aptune.data import DataFormatError, DataNotFoundError, load_arc, load_mc_jsonl, load_mc_task, load_mmlu, load_sciq
from aptune.data.multiple_choice import MMLU_SUBJECTS


pytestmark = pytest.mark.usefixtures("no_env_data")


@pytest.mark.parametrize(
    "subset, split, rows",
    [("easy", "train", 2251), ("easy", "dev", 570), ("easy", "test", 2376),
     ("challenge", "train", 1119), ("challenge", "dev", 299), ("challenge", "test", 1172)],
)
def test_arc_row_counts(subset, split, rows):
    dataset = load_arc(subset, split)
    assert len(dataset.items) == rows and dataset.source.kind == "shared"
    assert all(0 <= item.answer < len(item.choices) for item in dataset.items)
    # About 1-2% use numeric labels "1".."5" and a few have 3 or 5 choices: all must load.
    assert {len(item.choices) for item in dataset.items} <= {3, 4, 5}


def test_arc_item_format_and_numeric_labels():
    items = load_arc("easy", "dev").items
    first = items[0]
    assert first.context == "Question: Which technology was developed most recently?\nAnswer:"
    assert first.choices == ("cellular telephone", "television", "refrigerator", "airplane") and first.answer == 0
    assert first.id == "MCAS_2000_4_6"


@pytest.mark.parametrize("split", ["test", "valid"])
def test_sciq_rows_and_support(split):
    dataset = load_sciq(split)
    assert len(dataset.items) == 1000
    assert all(item.answer == 3 and len(item.choices) == 4 for item in dataset.items)
    assert all(item.context.startswith("Question: ") for item in dataset.items)
    with_support = load_sciq(split, include_support=True)
    assert sum(not item.context.startswith("Question: ") for item in with_support.items) > 500


def test_mmlu_row_counts_and_answer_balance():
    assert len(MMLU_SUBJECTS) == 57
    assert len(load_mmlu("dev").items) == 285
    val = load_mmlu("val")
    assert len(val.items) == 1531 and len(val.fewshot_pool) == 285
    test = load_mmlu("test", scoring="letters")
    assert len(test.items) == 14042
    assert Counter("ABCD"[item.answer] for item in test.items) == {"A": 3222, "B": 3462, "C": 3582, "D": 3776}


def test_mmlu_scorings_and_subjects():
    options = load_mmlu("val", subjects=["anatomy"], scoring="options")
    letters = load_mmlu("val", subjects=["anatomy"], scoring="letters")
    assert len(options.items) == len(letters.items) == 14
    first_options, first_letters = options.items[0], letters.items[0]
    assert first_options.context.startswith("Question: Which of the following terms describes")
    assert first_options.choices == ("Anabolism", "Catabolism", "Tolerance", "Homeostasis")
    assert first_letters.choices == ("A", "B", "C", "D")
    assert "\nD. Homeostasis\nAnswer:" in first_letters.context
    assert first_options.answer == first_letters.answer == 3
    assert first_options.description == "The following are multiple choice questions (with answers) about anatomy.\n\n"
    assert options.name == "mmlu:anatomy" and options.scoring == "options"
    with pytest.raises(ValueError, match="unknown MMLU subject"):
        load_mmlu("val", subjects=["astrology"])


def test_load_mc_task_by_name():
    assert len(load_mc_task("arc-challenge").items) == 299
    assert load_mc_task("sciq").split == "test"
    with pytest.raises(ValueError, match="unknown multiple-choice task"):
        load_mc_task("hellaswag")


def test_mc_jsonl_roundtrip(tmp_path):
    path = tmp_path / "items.jsonl"
    rows = [{"question": "2+2?", "choices": ["3", "4"], "answer": 1},
            {"question": "Sky colour?", "choices": ["blue", "green", "red"], "answer": 0, "id": "sky"}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    dataset = load_mc_jsonl(path)
    assert [item.answer for item in dataset.items] == [1, 0]
    assert dataset.items[0].context == "Question: 2+2?\nAnswer:" and dataset.items[1].id == "sky"


@pytest.mark.parametrize(
    "bad_line, match",
    [
        ('{"question": "q", "choices": ["a", "b"]}', "missing field 'answer'"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 2}', "'answer' must be an integer index in \\[0, 1\\]"),
        ('{"question": "q", "choices": ["a", "b"], "answer": "1"}', "'answer' must be an integer"),
        ('{"question": "q", "choices": "ab", "answer": 0}', "'choices' must be a list"),
        ('{"question": "q", "choices": ["a", "b"], "ans', "invalid JSON"),  # a truncated line
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, bad_line, match):
    path = tmp_path / "items.jsonl"
    good = json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0})
    path.write_text(f"{good}\n{good}\n{bad_line}\n")
    with pytest.raises(DataFormatError, match=match) as caught:
        load_mc_jsonl(path)
    assert str(caught.value).startswith(f"{path}:3:")


def test_malformed_arc_and_mmlu_files_name_the_line(tmp_path):
    arc = tmp_path / "ARC-Easy" / "ARC-Easy-Dev.jsonl"
    arc.parent.mkdir()
    record = {"id": "x", "question": {"stem": "q", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "A"}
    arc.write_text(json.dumps(record) + "\n" + json.dumps({**record, "answerKey": "E"}) + "\n")
    with pytest.raises(DataFormatError, match=r"ARC-Easy-Dev\.jsonl:2: answerKey 'E'"):
        load_arc("easy", "dev", data_dir=tmp_path)
    folder = tmp_path / "MMLU" / "val"
    folder.mkdir(parents=True)
    (folder / "anatomy_val.csv").write_text('q1,a,b,c,d,A\n"multi\nline q",a,b,c,d,B\nq3,a,b,c,d,F\n')
    with pytest.raises(DataFormatError, match=r"anatomy_val\.csv:4: answer 'F'"):
        load_mmlu("val", subjects=["anatomy"], data_dir=tmp_path)
    (folder / "anatomy_val.csv").write_text("q1,a,b,c,d,A\nq2,a,b,c\n")
    with pytest.raises(DataFormatError, match=r"anatomy_val\.csv:2: expected 6 comma-separated fields, found 4"):
        load_mmlu("val", subjects=["anatomy"], data_dir=tmp_path)


def test_malformed_sciq_json_array_names_the_line(tmp_path):
    folder = tmp_path / "SciQ"
    folder.mkdir()
    good = {"question": "q", "distractor1": "a", "distractor2": "b", "distractor3": "c", "correct_answer": "d"}
    bad = {key: value for key, value in good.items() if key != "correct_answer"}
    (folder / "test.json").write_text("[\n" + json.dumps(good) + ",\n" + json.dumps(bad) + "\n]\n")
    with pytest.raises(DataFormatError, match=r"test\.json:3: SciQ record lacks.*correct_answer"):
        load_sciq("test", data_dir=tmp_path)
    (folder / "test.json").write_text("[\n" + json.dumps(good) + ",\n" + json.dumps(good)[:30])
    with pytest.raises(DataFormatError, match=r"test\.json:3: invalid JSON"):
        load_sciq("test", data_dir=tmp_path)


def test_fewshot_pools_come_from_another_split():
    assert len(load_mc_task("arc-easy", num_fewshot=5).fewshot_pool) == 2251
    assert load_mc_task("arc-easy").fewshot_pool is None
    assert len(load_mc_task("sciq", num_fewshot=2).fewshot_pool) == 1000
    assert len(load_mc_task("mmlu", subjects=["anatomy"], num_fewshot=5).fewshot_pool) == 5


def test_an_empty_choice_is_refused_with_the_file_and_line(tmp_path):
    path = tmp_path / "items.jsonl"
    good = json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0})
    path.write_text(f"{good}\n" + json.dumps({"question": "q", "choices": ["a", " "], "answer": 0}) + "\n")
    with pytest.raises(DataFormatError, match="choice 1 of 'choices' is empty") as caught:
        load_mc_jsonl(path)
    assert str(caught.value).startswith(f"{path}:2:")


def test_an_empty_question_is_prompted_with_answer_alone(tmp_path):
    path = tmp_path / "completions.jsonl"
    path.write_text(json.dumps({"question": "  ", "choices": ["The sky is blue.", "The sky is green."],
                                "answer": 0}) + "\n")
    assert load_mc_jsonl(path).items[0].context == "Answer:"  # not "Question: \nAnswer:"


def test_a_given_folder_is_the_only_place_read_for_every_split_needed(tmp_path):
    arc = tmp_path / "ARC-Easy" / "ARC-Easy-Dev.jsonl"
    arc.parent.mkdir()
    record = {"id": "x", "question": {"stem": "q", "choices": [{"text": "a", "label": "A"},
                                                              {"text": "b", "label": "B"}]}, "answerKey": "A"}
    arc.write_text(json.dumps(record) + "\n")
    assert len(load_mc_task("arc-easy", data_dir=tmp_path).items) == 1  # zero-shot: dev alone
    with pytest.raises(DataNotFoundError, match=r"lacks ARC-Easy/ARC-Easy-Train\.jsonl"):  # not the shared pool
        load_mc_task("arc-easy", data_dir=tmp_path, num_fewshot=2)
    with pytest.raises(DataNotFoundError, match=r"lacks SciQ/test\.json"):
        load_mc_task("sciq", data_dir=tmp_path)
    folder = tmp_path / "MMLU" / "val"
    folder.mkdir(parents=True)
    (folder / "anatomy_val.csv").write_text("q1,a,b,c,d,A\n")
    zero_shot = load_mc_task("mmlu", subjects=["anatomy"], data_dir=tmp_path)  # needs no MMLU/dev pool
    assert len(zero_shot.items) == 1 and zero_shot.fewshot_pool is None
    with pytest.raises(DataNotFoundError, match=r"lacks MMLU/dev/anatomy_dev\.csv"):
        load_mc_task("mmlu", subjects=["anatomy"], data_dir=tmp_path, num_fewshot=1)
