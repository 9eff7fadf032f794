"""Greedy answers to instructions, formatted the way the model was tuned (chat template or Alpaca prompt), and
texts a model samples unprompted (:func:`sampled_documents`, recovery data from the model itself).

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


@torch.inference_mode()
def batched_greedy_outputs(model, tokenizer, records: list[InstructionRecord], max_length: int = 256,
                           batch_size: int = 32, prompt_style: str = "auto", progress=None) -> list[str]:
    """The model's greedy answer to each record's prompt (instruction and input), in the records' order.

    Sequence-level distillation data for hundreds of records, so batched: prompts are sorted by length and
    left-padded, so a batch wastes little on padding. An answer stops at the end-of-sequence token or when
    prompt and answer fill ``max_length`` tokens, the length training reads (``data.max_length``): an answer
    cut there is cut by the training tokenizer at the same place, so it is never taught to end early. The
    result is deterministic for a given ``batch_size`` (padding changes float sums, so another batch size may
    flip a near-tie). ``progress(done, total)`` is called after each batch.
    """
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
    device = next(model.parameters()).device
    prompts = [format_prompt_and_response(record, tokenizer, prompt_style)[0] for record in records]
    encoded = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    order = sorted(range(len(records)), key=lambda index: len(encoded[index]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outputs: list[str] = [""] * len(records)  # a prompt that fills max_length alone gets no answer
    for start in range(0, len(order), batch_size):
        batch = [index for index in order[start:start + batch_size] if len(encoded[index]) < max_length]
        if batch:
            _answer_batch(model, tokenizer, batch, encoded, max_length, pad_id, outputs, device)
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    return outputs


def _answer_batch(model, tokenizer, batch, encoded, max_length, pad_id, outputs, device) -> None:
    """Greedy answers of one left-padded batch, written into ``outputs`` (each trimmed to its own room)."""
    width = max(len(encoded[index]) for index in batch)
    pads = [width - len(encoded[index]) for index in batch]
    ids = torch.tensor([[pad_id] * pad + encoded[index] for pad, index in zip(pads, batch)], device=device)
    mask = torch.tensor([[0] * pad + [1] * len(encoded[index]) for pad, index in zip(pads, batch)], device=device)
    room = max_length - min(len(encoded[index]) for index in batch)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=room, do_sample=False,
                         pad_token_id=pad_id)
    for row, index in enumerate(batch):
        new = out[row, width:width + max_length - len(encoded[index])]
        outputs[index] = tokenizer.decode(new, skip_special_tokens=True).strip()


# Common first words of English documents, none of them pointing at a subject: the model chooses the topic.
DOCUMENT_OPENERS = ("The", "In", "A", "When", "Many", "One", "It", "This", "There", "How", "What", "If", "For",
                    "Most", "Some", "Although", "During", "After", "Our", "Every")


@torch.inference_mode()
def sampled_documents(model, tokenizer, count: int, new_tokens: int = 200, batch_size: int = 64,
                      temperature: float = 0.8, top_p: float = 0.95, seed: int = 0, min_chars: int = 200,
                      progress=None) -> list[str]:
    """Texts the model writes unprompted: ``count`` samples, each started after the end-of-text token (the
    boundary between the documents it was pretrained on) with one of :data:`DOCUMENT_OPENERS` in turn, and
    ``new_tokens`` long at most.

    Recovery data from the model itself, drawn from what it learned in pretraining rather than from one
    instruction set. The opener is there because SmolLM2-135M's first token after a bare end-of-text is
    mostly debris ("-_", code fragments), while after a common first word it writes prose, explanations and
    worked problems. Seeded (``seed``), so a rerun on the same machine writes the same texts. Samples of
    ``min_chars`` characters or fewer (the model ended the document at once) are dropped, so fewer than
    ``count`` may come back. ``progress(done, count)`` is called after each batch.
    """
    if count < 1 or batch_size < 1 or new_tokens < 1 or temperature <= 0 or not 0 < top_p <= 1:
        raise ValueError(f"need count, batch_size, new_tokens >= 1, temperature > 0 and top_p in (0, 1]; got "
                         f"{count}, {batch_size}, {new_tokens}, {temperature}, {top_p}")
    start = tokenizer.get_vocab().get("<|endoftext|>", tokenizer.eos_token_id)
    prompts = [[start] + tokenizer(opener, add_special_tokens=False)["input_ids"] for opener in DOCUMENT_OPENERS]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    texts: list[str] = []
    for done in range(0, count, batch_size):
        batch = [prompts[index % len(prompts)] for index in range(done, min(done + batch_size, count))]
        width = max(map(len, batch))  # left-padded, so every row continues from its last prompt token
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                             top_p=top_p, max_new_tokens=new_tokens, pad_token_id=pad_id)
        decoded = (tokenizer.decode(row, skip_special_tokens=True).strip() for row in out)
        texts.extend(text for text in decoded if len(text) > min_chars)
        if progress is not None:
            progress(done + len(batch), count)
    return texts
