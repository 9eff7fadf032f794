"""A model's own answers as recovery data: ``aptune generate`` writes them, ``data.train_responses`` trains on them.

The invariants: batching changes no answer (left padding is masked) and an answer never runs past the length
training reads; the replacement touches the training records' outputs only, so the held-out split, and with it
the held-out loss, is the same records with and without it."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_llama_dir

from aptune.cli import main
from aptune.config import load_config
from aptune.data.instruct import InstructionRecord, load_instruction_data, replace_outputs
from aptune.eval.generate import batched_greedy_outputs
from aptune.models import load_model
from aptune.train.tasks import load_train_task

RECORDS = [InstructionRecord("Name a color.", "", "Blue."),
           InstructionRecord("Add the numbers.", "2 and 3", "5"),
           InstructionRecord("Write a long story about a dragon who learns to read books.", "", "Once..."),
           InstructionRecord("Say hi.", "", "Hi!")]


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _tiny(tmp_path):
    """A tiny random LLaMA whose weights are spread wide enough to answer in varied tokens (at the default
    init it repeats one token), saved to a folder; returns (model, tokenizer, folder)."""
    folder = tmp_path / "varied"
    if not folder.is_dir():
        base, tokenizer = tiny_llama_dir(tmp_path)
        model = load_model(base, head="causal-lm")
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    from aptune.models import load_tokenizer

    return load_model(folder, head="causal-lm").eval(), load_tokenizer(str(folder)), folder


def test_batched_answers_equal_one_at_a_time_and_stop_at_max_length(tmp_path):
    model, tokenizer, _ = _tiny(tmp_path)
    one = batched_greedy_outputs(model, tokenizer, RECORDS, max_length=72, batch_size=1)
    batched = batched_greedy_outputs(model, tokenizer, RECORDS, max_length=72, batch_size=3)
    assert batched == one and all(one)
    from aptune.data.instruct import tokenize_instruction

    for record, answer in zip(RECORDS, one):  # prompt + answer never longer than training reads
        feature, _ = tokenize_instruction(InstructionRecord(record.instruction, record.input, answer), tokenizer,
                                          10_000)
        prompt_tokens = feature["labels"].count(-100)
        answer_tokens = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
        assert prompt_tokens + answer_tokens <= 72 + 2  # decode/encode may merge or split a token at the ends


def test_replace_outputs_matches_by_instruction_and_input_and_names_what_is_missing(tmp_path):
    answers = _write(tmp_path / "answers.jsonl", [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "Five."},
        {"instruction": "Name a color.", "input": "", "output": "Red."}])
    replaced = replace_outputs(RECORDS[:2], answers)
    assert [r.output for r in replaced] == ["Red.", "Five."]
    assert [(r.instruction, r.input, r.origin) for r in replaced] == [(r.instruction, r.input, r.origin)
                                                                       for r in RECORDS[:2]]
    with pytest.raises(ValueError, match=r"no response for 2 of the 4 training records.*Write a long story"):
        replace_outputs(RECORDS, answers)


def test_train_responses_replace_training_outputs_and_leave_the_held_out_split(tmp_path):
    _, tokenizer, base = _tiny(tmp_path)
    data = _write(tmp_path / "data.jsonl", [{"instruction": f"Task {i}.", "input": "", "output": f"Answer {i}."}
                                            for i in range(20)])
    answers = _write(tmp_path / "answers.jsonl", [{"instruction": f"Task {i}.", "input": "", "output": f"Mine {i}."}
                                                  for i in range(20)])
    plain = load_instruction_data(data, tokenizer, 64, seed=3)
    swapped = load_instruction_data(data, tokenizer, 64, seed=3, train_responses=answers)
    assert swapped.eval == plain.eval and swapped.eval_records == plain.eval_records
    assert [r.instruction for r in swapped.train_records] == [r.instruction for r in plain.train_records]
    assert all(r.output.startswith("Mine ") for r in swapped.train_records)
    config = load_config("configs/smollm2/alpaca.yaml", [f"model.name={base}", f"data.task={data}",
                                                        f"data.train_responses={answers}", "train.seed=3"])
    task = load_train_task(config, tokenizer)  # the config key reaches the loader
    assert task.train == swapped.train and task.eval == plain.eval


def test_train_responses_is_refused_for_a_classifier_and_for_chat_records():
    with pytest.raises(ValueError, match="data.train_responses=.*needs model.head=causal-lm"):
        load_config("configs/minilm/sst2.yaml", ["data.train_responses=answers.jsonl"])
    with pytest.raises(ValueError, match="data.train_responses=.*chat records"):
        load_config("configs/smollm2/alpaca.yaml",
                    ["data.train_responses=answers.jsonl", "data.messages_field=messages"])


def test_generate_command_writes_answers_a_training_run_can_read(tmp_path):
    _, tokenizer, base = _tiny(tmp_path)
    data = _write(tmp_path / "data.jsonl", [{"instruction": r.instruction, "input": r.input, "output": r.output}
                                            for r in RECORDS])
    out = tmp_path / "answers.jsonl"
    assert main(["generate", "--model", str(base), "--data", str(data), "--output", str(out), "--max-length", "64",
                 "--batch-size", "2", "--threads", "1"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["dataset_output"] for row in rows] == [r.output for r in RECORDS]
    model, _, _ = _tiny(tmp_path)
    assert [row["output"] for row in rows] == batched_greedy_outputs(model, tokenizer, RECORDS, 64, 2)
    meta = json.loads((tmp_path / "answers.jsonl.meta.json").read_text())
    assert meta["records"] == 4 and meta["max_length"] == 64 and "aptune_git_sha" in meta["meta"]
    assert replace_outputs(RECORDS, out)[2].output == rows[2]["output"]


def test_extra_train_file_joins_the_training_split_and_leaves_the_held_out_records(tmp_path):
    _, tokenizer, base = _tiny(tmp_path)
    data = _write(tmp_path / "data.jsonl", [{"instruction": f"Task {i}.", "input": "", "output": f"Answer {i}."}
                                            for i in range(20)])
    extra = _write(tmp_path / "extra.jsonl", [{"instruction": "Write a passage.", "input": "", "output": f"Text {i}."}
                                              for i in range(5)])
    overrides = [f"model.name={base}", f"data.task={data}", "train.seed=3"]
    plain = load_train_task(load_config("configs/smollm2/alpaca.yaml", overrides), tokenizer)
    more = load_train_task(load_config("configs/smollm2/alpaca.yaml", overrides + [f"data.extra_train_file={extra}"]),
                           tokenizer)
    assert more.eval == plain.eval
    assert more.train[:len(plain.train)] == plain.train and len(more.train) == len(plain.train) + 5
    added = load_instruction_data(extra, tokenizer, 64, eval_fraction=0.0)
    assert more.train[len(plain.train):] == added.train  # tokenized as the data set's own records are
    with pytest.raises(ValueError, match="data.extra_train_file=.*needs model.head=causal-lm"):
        load_config("configs/minilm/sst2.yaml", [f"data.extra_train_file={extra}"])


def test_generate_documents_writes_seeded_samples_a_training_run_can_add(tmp_path):
    _, tokenizer, base = _tiny(tmp_path)
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for out in outs:
        assert main(["generate", "--model", str(base), "--documents", "3", "--new-tokens", "6", "--batch-size", "2",
                     "--min-chars", "0", "--seed", "5", "--threads", "1", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in outs[0].read_text().splitlines()]
    assert len(rows) == 3 and all(row["instruction"] == "Write a passage." and row["output"] for row in rows)
    assert outs[0].read_text() == outs[1].read_text()  # seeded
    meta = json.loads((tmp_path / "a.jsonl.meta.json").read_text())
    assert meta["documents"] == 3 and meta["kept"] == 3 and meta["seed"] == 5
    config = load_config("configs/smollm2/alpaca.yaml", [f"model.name={base}", f"data.extra_train_file={outs[0]}"])
    assert len(load_train_task(config, tokenizer).train) > 3
