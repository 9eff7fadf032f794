"""Alpaca instruction data: loss only on response tokens, prompts, truncation, held-out split, bad files."""

from __future__ import annotations

import json

import pytest

from aptune.data import DataFormatError, DataNotFoundError, load_instruction_data
from aptune.data.instruct import IGNORE_INDEX, InstructionRecord, format_prompt_and_response, tokenize_instruction


pytestmark = pytest.mark.usefixtures("no_env_data")


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from aptune.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from aptune.models import load_tokenizer

    return load_tokenizer("minilm")


def _assert_labels_are_response_only(feature, prompt_length):
    ids, labels = feature["input_ids"], feature["labels"]
    assert len(ids) == len(labels) == len(feature["attention_mask"])
    assert all(label == IGNORE_INDEX for label in labels[:prompt_length])
    assert labels[prompt_length:] == ids[prompt_length:]
    assert all(label != IGNORE_INDEX for label in labels[prompt_length:])


@pytest.mark.slow
def test_loss_only_on_response_tokens_with_chat_template(smollm2_tokenizer):
    tokenizer = smollm2_tokenizer
    data = load_instruction_data("alpaca", tokenizer, max_length=512, eval_fraction=0.1, seed=0,
                                 max_train_samples=40, max_eval_samples=10)
    assert data.prompt_style == "chat_template" and data.source.kind == "shared"
    assert (len(data.train), len(data.eval)) == (40, 10)
    for feature, record in zip(data.train, data.train_records):
        prompt, response = format_prompt_and_response(record, tokenizer)
        prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        _assert_labels_are_response_only(feature, prompt_length)
        answer_tokens = [tok for tok, label in zip(feature["input_ids"], feature["labels"]) if label != IGNORE_INDEX]
        text = tokenizer.decode(answer_tokens)
        if len(feature["input_ids"]) < 512:  # untruncated: the whole answer and the end-of-turn marker
            assert text == record.output + "<|im_end|>\n"
        else:
            assert record.output.startswith(text)
        assert "<|im_start|>assistant\n" in prompt and prompt.rstrip().endswith("assistant")


def test_loss_only_on_response_tokens_with_alpaca_prompt(minilm_tokenizer):
    tokenizer = minilm_tokenizer  # no chat template: the Alpaca prompt is used
    record = InstructionRecord("Add the numbers.", "2 and 3", "The sum is 5.")
    prompt, response = format_prompt_and_response(record, tokenizer)
    assert prompt.endswith("### Input:\n2 and 3\n\n### Response:\n") and response.startswith("The sum is 5.")
    feature, truncated = tokenize_instruction(record, tokenizer, max_length=128)
    assert not truncated
    prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    _assert_labels_are_response_only(feature, prompt_length)
    answer = [token for token, label in zip(feature["input_ids"], feature["labels"]) if label != IGNORE_INDEX]
    assert tokenizer.decode(answer) == "the sum is 5."  # MiniLM lower-cases


def test_truncation_cuts_the_response_and_drops_prompt_only_records(minilm_tokenizer, tmp_path):
    long_output = " ".join(["word"] * 200)
    records = [{"instruction": "Repeat a word.", "input": "", "output": long_output},
               {"instruction": " ".join(["long"] * 300), "input": "", "output": "ok"},
               {"instruction": "Say hi.", "output": "hi"}]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    data = load_instruction_data(path, minilm_tokenizer, max_length=64, eval_fraction=0.0)
    assert data.num_dropped == 1 and data.num_truncated == 1 and len(data.train) == 2 and not data.eval
    assert max(len(feature["input_ids"]) for feature in data.train) == 64
    assert data.source.kind == "file"


def test_held_out_split_is_seeded_and_disjoint(minilm_tokenizer):
    first = load_instruction_data("alpaca", minilm_tokenizer, max_length=256, eval_fraction=0.1, seed=0)
    assert (len(first.train), len(first.eval)) == (899, 100)
    assert not {r.origin for r in first.train_records} & {r.origin for r in first.eval_records}
    again = load_instruction_data("alpaca", minilm_tokenizer, max_length=256, eval_fraction=0.1, seed=0,
                                  max_eval_samples=100)
    assert [r.origin for r in again.eval_records] == [r.origin for r in first.eval_records]
    other = load_instruction_data("alpaca", minilm_tokenizer, max_length=256, eval_fraction=0.1, seed=1)
    assert [r.origin for r in other.eval_records] != [r.origin for r in first.eval_records]


@pytest.mark.parametrize(
    "content, line, match",
    [
        ('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c"}\n]', 3, "no 'output' field"),
        ('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c", "output": 7}\n]', 3,
         "'output' must be a string"),
        ('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c", "out', 3, "invalid JSON"),
        ('{"instruction": "a", "output": "b"}\n{"instruction": "", "output": "b"}\n', 2, "'instruction' is empty"),
    ],
)
def test_malformed_instruction_file_names_file_and_line(minilm_tokenizer, tmp_path, content, line, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=match) as caught:
        load_instruction_data(path, minilm_tokenizer, max_length=64)
    assert str(caught.value).startswith(f"{path}:{line}:")


def test_alpaca_from_a_given_folder_without_it_is_an_error(minilm_tokenizer, tmp_path):
    with pytest.raises(DataNotFoundError, match=r"lacks alpaca/alpaca_en_demo\.json"):
        load_instruction_data("alpaca", minilm_tokenizer, data_dir=tmp_path)
