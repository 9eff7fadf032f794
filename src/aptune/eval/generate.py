"""Greedy answers to instructions, formatted the way the model was tuned (chat template or Alpaca prompt).

    answers = greedy_answers(model, tokenizer, ["Name three primary colors."], max_new_tokens=48)

Used to put a few generations of several models side by side: deterministic (greedy, no sampling), one
prompt at a time (no padding effects), stopping at the end-of-sequence token.
"""

from __future__ import annotations

from pathlib import Path

import torch

from aptune.data.instruct import InstructionRecord, format_prompt_and_response


def read_prompts(path: str | Path) -> list[str]:
    """Instructions from a text file, one per line (blank lines and lines starting with ``#`` skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} does not exist (a text file with one instruction per line)")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"prompts file {path} has no instructions (one per line)")
    return prompts


@torch.inference_mode()
def greedy_answers(model, tokenizer, instructions: list[str], max_new_tokens: int = 64,
                   prompt_style: str = "auto") -> list[dict]:
    """The greedy continuation of each instruction's prompt: ``[{"instruction", "answer", "new_tokens"}]``."""
    device = next(model.parameters()).device
    answers = []
    for instruction in instructions:
        prompt, _ = format_prompt_and_response(InstructionRecord(instruction, "", ""), tokenizer, prompt_style)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(device)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                             else tokenizer.eos_token_id)
        new = out[0, inputs["input_ids"].shape[1]:]
        answers.append({"instruction": instruction,
                        "answer": tokenizer.decode(new, skip_special_tokens=True).strip(),
                        "new_tokens": int(new.numel())})
    return answers
