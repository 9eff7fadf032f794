"""Instruction tuning data in the Alpaca format (``instruction``, ``input``, ``output``).

API for the trainer::

    data = load_instruction_data("alpaca", tokenizer, max_length=512, eval_fraction=0.1, seed=0)
    data.train, data.eval   # lists of {"input_ids", "attention_mask", "labels"}; labels are -100 on the prompt
    data.prompt_style       # "chat_template" or "alpaca"

Each record becomes a prompt and a response:

* with the tokenizer's chat template (when it has one and ``prompt_style`` is ``"auto"`` or
  ``"chat_template"``): the user turn is the instruction (plus the input after a blank line), the prompt
  is the template rendered with the generation prompt, the response is what the template adds for the
  assistant turn (the output and the end-of-turn marker);
* otherwise the Stanford Alpaca prompt (``### Instruction: ... ### Response:``) and the output followed
  by the EOS token.

Prompt and response are tokenized separately and concatenated, so the boundary is exact: ``labels``
are ``-100`` on every prompt token and equal ``input_ids`` on the response tokens, and the loss is
taken on the response only. Sequences longer than ``max_length`` lose the end of the response; a
record whose prompt alone leaves no room for a response token is dropped (counted in
``num_dropped``), because it would carry no loss.

``path_or_name`` is ``"alpaca"`` (the shared ``alpaca/alpaca_en_demo.json``, hub fallback
``tatsu-lab/alpaca``) or a path to a JSON array / JSON-lines file of such records.

Other field names are given by :class:`InstructionFields` (``prompt``/``completion``...). Chat records
(``InstructionFields(messages="messages")``: a list of ``{"role", "content"}`` ending with an assistant
message) put every earlier turn in the prompt and the final assistant message in the response, so the
loss goes on that last answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aptune.data.files import DataFormatError, iter_json_records
from aptune.data.resolve import DataSource, load_hub_dataset, resolve_data
from aptune.data.splits import split_examples, subsample

logger = logging.getLogger("aptune.data")

IGNORE_INDEX = -100

ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

PROMPT_STYLES = ("auto", "chat_template", "alpaca")


CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class InstructionRecord:
    """One Alpaca record; ``origin`` is ``file:line`` or ``hub[index]``.

    A chat record keeps its whole conversation in ``messages`` (``(role, content)`` pairs, ending with the
    assistant's answer); ``instruction`` is then its last user turn and ``output`` that answer.
    """

    instruction: str
    input: str
    output: str
    origin: str = ""
    messages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class InstructionFields:
    """Where a record keeps its parts: three Alpaca-style fields, or (``messages`` set) one chat list."""

    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    messages: str | None = None


ALPACA_FIELDS = InstructionFields()


def record_from_mapping(
    mapping: Any, path: str, line: int | None, fields: InstructionFields = ALPACA_FIELDS
) -> InstructionRecord:
    """One validated record from a parsed JSON object or table row; errors name ``path`` and ``line``."""
    if fields.messages is not None:
        return _record_from_messages(mapping, path, line, fields.messages)
    names = (fields.instruction, fields.input, fields.output)
    if not isinstance(mapping, dict):
        kind = type(mapping).__name__
        raise DataFormatError(path, line, f"expected a JSON object with {'/'.join(names)}, got {kind}")
    for key in (fields.instruction, fields.output):
        if key not in mapping:
            raise DataFormatError(path, line, f"record has no {key!r} field (fields: {sorted(mapping)})")
    for key in names:
        if key in mapping and mapping[key] is not None and not isinstance(mapping[key], str):
            raise DataFormatError(path, line, f"field {key!r} must be a string, got {type(mapping[key]).__name__}")
    if not (mapping[fields.instruction] or "").strip():
        raise DataFormatError(path, line, f"field {fields.instruction!r} is empty")
    if mapping[fields.output] is None:
        raise DataFormatError(path, line, f"field {fields.output!r} is empty")
    return InstructionRecord(mapping[fields.instruction], mapping.get(fields.input) or "", mapping[fields.output],
                             f"{path}:{line}")


def _record_from_messages(mapping: Any, path: str, line: int | None, key: str) -> InstructionRecord:
    """A chat record: ``mapping[key]`` is a list of ``{"role", "content"}`` ending with the assistant's answer."""
    if not isinstance(mapping, dict) or key not in mapping:
        found = sorted(mapping) if isinstance(mapping, dict) else type(mapping).__name__
        raise DataFormatError(path, line, f"expected a record with a {key!r} list of messages; found {found}")
    turns = mapping[key]
    if not isinstance(turns, list) or not turns:
        raise DataFormatError(path, line, f"field {key!r} must be a non-empty list of {{role, content}} messages")
    messages = []
    for number, turn in enumerate(turns, start=1):
        role = turn.get("role") if isinstance(turn, dict) else None
        content = turn.get("content") if isinstance(turn, dict) else None
        if role not in CHAT_ROLES or not isinstance(content, str):
            raise DataFormatError(path, line, f"message {number} of {key!r} must be {{'role': one of "
                                              f"{', '.join(CHAT_ROLES)}, 'content': a string}}; got {turn!r:.120}")
        messages.append((role, content))
    if messages[-1][0] != "assistant" or not messages[-1][1].strip():
        raise DataFormatError(path, line, f"the last message of {key!r} must be a non-empty assistant answer "
                                          f"(the loss goes on it); it is a {messages[-1][0]} message")
    last_user = next((content for role, content in reversed(messages) if role == "user"), "")
    return InstructionRecord(last_user, "", messages[-1][1], f"{path}:{line}", tuple(messages))


def read_instruction_file(path: str | Path, fields: InstructionFields = ALPACA_FIELDS) -> list[InstructionRecord]:
    """Read Alpaca records (or chat records, see :class:`InstructionFields`) from a JSON array or JSON-lines
    file, validating each.

    Raises:
        DataFormatError: invalid JSON, a missing ``instruction``/``output`` field or a non-string field;
            the message names the file and line.
    """
    records = [record_from_mapping(obj, str(path), line, fields) for line, obj in iter_json_records(path)]
    if not records:
        raise DataFormatError(path, None, "no records")
    return records


def load_instruction_records(
    path_or_name: str | Path = "alpaca", data_dir: str | Path | None = None, fields: InstructionFields = ALPACA_FIELDS
):
    """Read Alpaca records from a file (``fields`` names its fields) or by name; returns ``(records, DataSource)``."""
    candidate = Path(path_or_name)
    if candidate.is_file():
        return read_instruction_file(candidate, fields), DataSource("file", str(candidate))
    if str(path_or_name) != "alpaca":
        raise FileNotFoundError(
            f"instruction data {str(path_or_name)!r} is neither an existing JSON/JSONL file nor 'alpaca'"
        )
    resolved = resolve_data(
        "Alpaca instruction data",
        ["alpaca/alpaca_en_demo.json"],
        data_dir=data_dir,
        hub_loader=lambda: load_hub_dataset("tatsu-lab/alpaca", split="train"),
        hub_id="tatsu-lab/alpaca",
    )
    if resolved.hub_data is not None:
        records = [
            record_from_mapping(dict(row), "hub:tatsu-lab/alpaca", index)
            for index, row in enumerate(resolved.hub_data)
        ]
        return records, resolved.source
    return read_instruction_file(resolved.paths[0]), resolved.source


def user_message(record: InstructionRecord) -> str:
    """The user turn for chat templates: the instruction, then the input after a blank line."""
    return f"{record.instruction}\n\n{record.input}" if record.input.strip() else record.instruction


def context_messages(record: InstructionRecord) -> list[dict[str, str]]:
    """The chat turns before the answer: a chat record's conversation up to its last message, else one user
    turn. Earlier assistant turns are context, so the loss goes on the final answer only."""
    if record.messages:
        return [{"role": role, "content": content} for role, content in record.messages[:-1]]
    return [{"role": "user", "content": user_message(record)}]


def plain_conversation_prompt(turns: tuple[tuple[str, str], ...]) -> str:
    """A conversation for tokenizers without a chat template, in the Alpaca prompt's ``###`` style."""
    rendered = "".join(f"### {role.capitalize()}:\n{content}\n\n" for role, content in turns)
    return rendered + "### Assistant:\n"


def resolve_prompt_style(tokenizer, prompt_style: str = "auto") -> str:
    """``"chat_template"`` when requested or available (``auto``), else ``"alpaca"``."""
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {prompt_style!r}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_style == "chat_template" and not has_template:
        raise ValueError("prompt_style='chat_template' but the tokenizer has no chat template")
    if prompt_style == "auto":
        return "chat_template" if has_template else "alpaca"
    return prompt_style


def format_prompt_and_response(record: InstructionRecord, tokenizer, prompt_style: str = "auto") -> tuple[str, str]:
    """Split a record into the prompt text (no loss) and the response text (loss), per the prompt style."""
    style = resolve_prompt_style(tokenizer, prompt_style)
    if style == "alpaca":
        if record.messages:
            prompt = plain_conversation_prompt(record.messages[:-1])
        else:
            template = ALPACA_PROMPT_WITH_INPUT if record.input.strip() else ALPACA_PROMPT_NO_INPUT
            prompt = template.format(instruction=record.instruction, input=record.input)
        return prompt, record.output + (tokenizer.eos_token or "")
    messages = context_messages(record)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": record.output}], tokenize=False
    )
    if not full.startswith(prompt):
        # Some templates render the assistant header differently with and without content; cut at the
        # longest common prefix so the prompt/response boundary is still exact.
        common = 0
        while common < min(len(prompt), len(full)) and prompt[common] == full[common]:
            common += 1
        prompt = full[:common]
    return prompt, full[len(prompt) :]


def _prefix_bos(tokenizer) -> list[int]:
    """A BOS token when the tokenizer would add one itself (LLaMA-2 style); none for SmolLM2/GPT-2 style."""
    if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None:
        return [tokenizer.bos_token_id]
    return []


def tokenize_instruction(
    record: InstructionRecord, tokenizer, max_length: int, prompt_style: str = "auto"
) -> tuple[dict[str, list[int]] | None, bool]:
    """Tokenize one record with loss masking; returns ``(feature or None if dropped, truncated?)``."""
    prompt, response = format_prompt_and_response(record, tokenizer, prompt_style)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if prompt_ids[:1] != [tokenizer.bos_token_id]:  # the chat template may already start with BOS
        prompt_ids = _prefix_bos(tokenizer) + prompt_ids
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    room = max_length - len(prompt_ids)
    if room < 1 or not response_ids:
        return None, False
    truncated = len(response_ids) > room
    response_ids = response_ids[:room]
    input_ids = prompt_ids + response_ids
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": [IGNORE_INDEX] * len(prompt_ids) + list(response_ids),
    }, truncated


@dataclass
class InstructionData:
    """Tokenized instruction data with a held-out split.

    Attributes:
        train / eval: dicts of ``input_ids``, ``attention_mask``, ``labels`` (``-100`` on prompt tokens).
        prompt_style: ``"chat_template"`` or ``"alpaca"``.
        source: where the records came from.
        num_truncated: examples whose response was cut to fit ``max_length``.
        num_dropped: records dropped because the prompt left no room for a response token.
        train_records / eval_records: the records behind ``train`` / ``eval`` (dropped ones excluded).
    """

    train: list[dict[str, list[int]]]
    eval: list[dict[str, list[int]]]
    prompt_style: str
    source: DataSource
    max_length: int
    num_truncated: int = 0
    num_dropped: int = 0
    train_records: list[InstructionRecord] = field(default_factory=list, repr=False)
    eval_records: list[InstructionRecord] = field(default_factory=list, repr=False)


def load_instruction_data(
    path_or_name: str | Path,
    tokenizer,
    max_length: int = 512,
    eval_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | Path | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    prompt_style: str = "auto",
    fields: InstructionFields = ALPACA_FIELDS,
) -> InstructionData:
    """Load Alpaca-format records, split off a held-out set, and tokenize with response-only labels.

    Args:
        path_or_name: ``"alpaca"`` or a JSON / JSONL file of ``{"instruction", "input", "output"}``.
        tokenizer: the model's tokenizer (its chat template is used when it has one).
        max_length: maximum tokens per example (prompt + response).
        eval_fraction: share of records held out for evaluation (seeded random split).
        seed: seed of the split and of subsampling.
        data_dir: explicit data folder, the only place read when ``path_or_name`` is ``"alpaca"`` (it must hold
            ``alpaca/alpaca_en_demo.json``).
        max_train_samples / max_eval_samples: seeded random subsets for quick runs.
        prompt_style: ``"auto"`` (chat template if any, else Alpaca), ``"chat_template"`` or ``"alpaca"``.
        fields: the field names of a file's records (Alpaca's by default, or a chat ``messages`` list).

    Returns:
        An :class:`InstructionData`.
    """
    records, source = load_instruction_records(path_or_name, data_dir, fields)
    train_records, eval_records = split_examples(records, eval_fraction, seed)
    return tokenize_instruction_splits(train_records, eval_records, source, tokenizer, max_length, seed,
                                       max_train_samples, max_eval_samples, prompt_style)


def tokenize_instruction_splits(
    train_records: list[InstructionRecord],
    eval_records: list[InstructionRecord],
    source: DataSource,
    tokenizer,
    max_length: int = 512,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    prompt_style: str = "auto",
) -> InstructionData:
    """Subsample and tokenize records already split into train and eval (a user's own eval file comes here
    without a split); arguments as in :func:`load_instruction_data`."""
    style = resolve_prompt_style(tokenizer, prompt_style)
    train_records = subsample(train_records, max_train_samples, seed)
    eval_records = subsample(eval_records, max_eval_samples, seed)
    counts = {"truncated": 0, "dropped": 0}

    def tokenize_all(part: list[InstructionRecord]):
        features, kept = [], []
        for record in part:
            feature, truncated = tokenize_instruction(record, tokenizer, max_length, style)
            if feature is None:
                counts["dropped"] += 1
                continue
            counts["truncated"] += truncated
            features.append(feature)
            kept.append(record)
        return features, kept

    train, train_records = tokenize_all(train_records)
    evaluation, eval_records = tokenize_all(eval_records)
    if counts["dropped"]:
        logger.warning(
            "%d instruction records dropped: the prompt alone exceeds max_length=%d", counts["dropped"], max_length
        )
    return InstructionData(
        train=train,
        eval=evaluation,
        prompt_style=style,
        source=source,
        max_length=max_length,
        num_truncated=counts["truncated"],
        num_dropped=counts["dropped"],
        train_records=train_records,
        eval_records=eval_records,
    )

