"""Multiple-choice log-likelihood scoring: exactness against a naive scorer, acc/acc_norm, few-shot, CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aptune.cli import main
from aptune.data import MCItem, load_arc, load_mmlu
from aptune.eval.mc import (
    build_prompt,
    choice_loglikelihoods,
    evaluate_multiple_choice,
    sample_fewshot,
    score_predictions,
)


pytestmark = pytest.mark.usefixtures("no_env_data")


@pytest.fixture(scope="module")
def tokenizer():
    from aptune.models import load_tokenizer

    return load_tokenizer("minilm")  # a real tokenizer that loads in milliseconds


@pytest.fixture(scope="module")
def tiny_lm(tokenizer):
    import transformers as tf

    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return tf.LlamaForCausalLM(config).eval()


def _naive_loglikelihood(model, tokenizer, prompt: str, continuation: str, max_length: int = 10_000) -> float:
    context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    whole = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
    target = whole[len(context) :]
    sequence = whole[-(max_length + 1) :]
    with torch.no_grad():
        logprobs = F.log_softmax(model(torch.tensor([sequence[:-1]])).logits[0].float(), dim=-1)
    positions = range(len(sequence) - 1 - len(target), len(sequence) - 1)
    return float(sum(logprobs[p, t] for p, t in zip(positions, target)))


def test_batched_scores_equal_one_sequence_at_a_time(tiny_lm, tokenizer):
    items = load_arc("easy", "dev").items[:6]
    prompts = [build_prompt(item) for item in items]
    continuations = [[" " + choice for choice in item.choices] for item in items]
    # A long multi-token continuation next to single-token ones, in the same batch.
    prompts.append("Question: pick one\nAnswer:")
    continuations.append([" yes", " a much longer answer with many different word pieces in it"])
    naive = [[_naive_loglikelihood(tiny_lm, tokenizer, p, c) for c in cs] for p, cs in zip(prompts, continuations)]
    for share_context in (True, False):
        batched = choice_loglikelihoods(tiny_lm, tokenizer, prompts, continuations, batch_size=4, progress=False,
                                        share_context=share_context)
        for got, expected in zip(batched, naive):
            assert np.allclose(got, expected, atol=1e-4), (share_context, got, expected)


def test_long_prompts_lose_their_beginning(tiny_lm, tokenizer):
    prompt = "Question: " + " ".join(f"word{i}" for i in range(200)) + "\nAnswer:"
    scores = choice_loglikelihoods(tiny_lm, tokenizer, [prompt], [[" yes", " no"]], max_length=64, progress=False)
    expected = [_naive_loglikelihood(tiny_lm, tokenizer, prompt, c, max_length=64) for c in (" yes", " no")]
    assert np.allclose(scores[0], expected, atol=1e-4)


def test_acc_and_acc_norm_reduction():
    items = [
        MCItem("q1", ("a", "bbbbbbbbbb"), answer=1),  # long right answer: wins only after normalisation
        MCItem("q2", ("yes", "no"), answer=0),
        MCItem("q3", ("x", "y", "z"), answer=2),
    ]
    loglikelihoods = [[-2.0, -5.0], [-1.0, -3.0], [-1.0, -2.0, -3.0]]
    result = score_predictions(items, loglikelihoods)
    assert result["acc"] == pytest.approx(1 / 3)  # only q2
    assert result["acc_norm"] == pytest.approx(2 / 3)  # q1 (-0.5/char vs -2/char) and q2
    assert result["n"] == 3 and result["chance"] == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    assert result["acc_stderr"] == pytest.approx(np.std([0, 1, 0], ddof=1) / np.sqrt(3))
    assert result["predicted_positions"] == [3, 0, 0]


def test_fewshot_prompts_exclude_the_item_and_prefer_its_group():
    mmlu = load_mmlu("val", subjects=["anatomy", "astronomy"])
    item = mmlu.items[0]
    shots = sample_fewshot(item, mmlu.fewshot_pool, 3, seed=1)
    assert len(shots) == 3 and all(shot.group == item.group for shot in shots) and item not in shots
    # The draw depends on the item, not on which other items are evaluated or in what order.
    assert sample_fewshot(item, mmlu.fewshot_pool, 3, seed=1) == shots
    prompt = build_prompt(item, shots)
    assert prompt.startswith(item.description)
    assert prompt.endswith("\n\n" + item.context)
    assert prompt.count("\nAnswer: ") == 3
    pool = load_arc("easy", "dev").items[:5]
    assert pool[0] not in sample_fewshot(pool[0], pool, 4)
    with pytest.raises(ValueError, match="needs 5 other items"):
        sample_fewshot(pool[0], pool, 5)


def test_evaluate_multiple_choice_reports_groups_and_details(tiny_lm, tokenizer):
    mmlu = load_mmlu("val", subjects=["anatomy", "astronomy"], scoring="letters")
    result = evaluate_multiple_choice(tiny_lm, tokenizer, mmlu, batch_size=8, num_fewshot=1, progress=False,
                                      return_details=True)
    assert result["n"] == 14 + 16 and result["num_fewshot"] == 1
    assert set(result["groups"]) == {"anatomy", "astronomy"}
    assert result["acc"] == result["acc_norm"]  # single letters: normalisation changes nothing
    assert len(result["details"]) == 30 and len(result["details"][0]["loglikelihoods"]) == 4


def _save_tiny_model(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cli_eval_on_an_mc_file(tiny_lm, tokenizer, tmp_path, capsys):
    model_dir = _save_tiny_model(tiny_lm, tokenizer, tmp_path / "model")
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps({"question": f"Is {i} even?", "choices": ["yes", "no"],
                                           "answer": i % 2}) for i in range(6)) + "\n")
    output = tmp_path / "result.json"
    code = main(["eval", "--model", str(model_dir), "--mc-file", str(items), "--output", str(output), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "acc=" in printed and "acc_norm=" in printed
    record = json.loads(output.read_text())
    result = record["results"][0]
    assert result["n"] == 6 and 0.0 <= result["acc"] <= 1.0 and result["task"] == "items"
    assert f"acc={result['acc']:.4f}" in printed


def test_cli_reports_malformed_file_cleanly(tiny_lm, tokenizer, tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n{"question": "q", "choices": ["a"]')
    code = main(["eval", "--model", "minilm", "--mc-file", str(items)])
    assert code == 2
    assert f"{items}:2: invalid JSON" in capsys.readouterr().err


def test_lm_eval_bridge_says_how_to_install(monkeypatch, tiny_lm, tokenizer):
    from aptune.eval.lm_eval_bridge import lm_eval_available, run_lm_eval

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    assert not lm_eval_available()
    with pytest.raises(ImportError, match="pip install"):
        run_lm_eval(tiny_lm, tokenizer, ["arc_easy"])


@pytest.mark.slow
def test_real_smollm2_scores_an_arc_slice():
    from aptune.models import load_model, load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    model = load_model("smollm2-135m", head="causal-lm")
    items = load_arc("easy", "dev").items[:12]
    result = evaluate_multiple_choice(model, tokenizer, items, batch_size=12, progress=False)
    assert result["n"] == 12
    assert 0.0 <= result["acc"] <= 1.0 and 0.0 <= result["acc_norm"] <= 1.0
    assert np.isfinite(result["acc_stderr"])


def test_cli_combines_multiple_choice_tasks_and_rejects_mixing_with_glue(tiny_lm, tokenizer, tmp_path, capsys):
    model_dir = _save_tiny_model(tiny_lm, tokenizer, tmp_path / "model")
    output = tmp_path / "all.json"
    code = main(["eval", "--model", str(model_dir), "--task", "arc-easy,mmlu", "--subjects", "anatomy",
                 "--scoring", "both", "--max-samples", "4", "--output", str(output), "--no-progress"])
    assert code == 0
    results = json.loads(output.read_text())["results"]
    assert [(r["task"], r["scoring"], r["split"]) for r in results] == [
        ("arc_easy", "options", "dev"), ("mmlu:anatomy", "options", "val"), ("mmlu:anatomy", "letters", "val")]
    assert "mmlu:anatomy (val, letters scoring, 0-shot): acc=" in capsys.readouterr().out
    assert main(["eval", "--model", str(model_dir), "--task", "sciq,sst2"]) == 2
    assert "only multiple-choice tasks" in capsys.readouterr().err


def _refuse_nan(constant: str):
    raise ValueError(f"{constant} is not JSON")


def test_one_item_writes_strict_json_with_null_for_the_undefined_standard_error(tiny_lm, tokenizer, tmp_path):
    model_dir = _save_tiny_model(tiny_lm, tokenizer, tmp_path / "model")
    items = tmp_path / "one.jsonl"
    items.write_text(json.dumps({"question": "Is 2 even?", "choices": ["yes", "no"], "answer": 0}) + "\n")
    output = tmp_path / "one.json"
    assert main(["eval", "--model", str(model_dir), "--mc-file", str(items), "--output", str(output),
                 "--no-progress"]) == 0
    record = json.loads(output.read_text(), parse_constant=_refuse_nan)  # a bare NaN would raise here
    result = record["results"][0]
    assert result["n"] == 1 and result["acc_stderr"] is None and result["acc_norm_stderr"] is None
    assert result["acc"] in (0.0, 1.0)


def test_the_scorer_refuses_an_empty_choice(tiny_lm, tokenizer):
    item = MCItem("Question: Is 2 even?\nAnswer:", ("yes", ""), 0, "items.jsonl:3")
    with pytest.raises(ValueError, match=r"item 'items\.jsonl:3': choice 1 is empty"):
        evaluate_multiple_choice(tiny_lm, tokenizer, [item], progress=False)


def test_a_missing_data_dir_is_an_error_before_any_model_loads(tmp_path, capsys):
    missing = tmp_path / "no-such-dir"
    assert main(["eval", "--model", "nosuchmodel", "--task", "arc-easy", "--data-dir", str(missing)]) == 2
    assert f"--data-dir {missing} does not exist" in capsys.readouterr().err
