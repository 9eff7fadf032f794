"""Multiple-choice items for log-likelihood evaluation: ARC, SciQ, MMLU and a generic JSONL format.

An :class:`MCItem` is what the scorer in :mod:`aptune.eval.mc` needs: a ``context`` ending in
``"Answer:"``, the ``choices`` scored as continuations (each preceded by ``target_delimiter``, a
space), the index of the right one, and an optional ``description`` placed once before any few-shot
examples. Prompts follow lm-evaluation-harness, so numbers are comparable:

* ARC, SciQ and the generic format: ``"Question: {question}\\nAnswer:"``, choices are the option texts. An
  item with an empty question (the generic format allows it: e.g. a completion where only the choices
  differ) is prompted with ``"Answer:"`` alone, not with an empty ``"Question: "`` line.
  SciQ is scored without its support passage by default (``include_support=True`` prepends it, as
  lm-eval's ``sciq`` task does); its choices are ``[distractor1, distractor2, distractor3, correct]``.
* MMLU, ``scoring="letters"`` (lm-eval ``mmlu``): the question and ``A. ... D. ...`` lines, choices
  ``A``-``D``. Small models tend to answer one letter whatever the question, which makes this scoring
  useless below a few hundred million parameters.
* MMLU, ``scoring="options"`` (lm-eval ``mmlu_continuation``): ``"Question: {question}\\nAnswer:"``,
  choices are the option texts.
  Both use lm-eval's description line "The following are multiple choice questions (with answers)
  about {subject}.".

Loaders (each resolves data as in :mod:`aptune.data.resolve`, hub as fallback)::

    load_arc("easy", "dev")            # ARC-Easy dev: 570 items; "challenge"; splits train/dev/test
    load_sciq("test")                  # 1,000 items; "valid" also
    load_mmlu("val", subjects=None, scoring="options")   # 1,531 items over 57 subjects
    load_mc_jsonl("items.jsonl")       # {"question": str, "choices": [str, ...], "answer": int} per line
    load_mc_task("arc-easy", split="dev")                # by name, for the command line

The generic JSONL format may also carry ``"id"`` and ``"subject"``; any other key is ignored. Every choice
must have text: an empty one would be scored as the bare delimiter (a space), which can win.

A ``data_dir`` given to a loader is the only place read; the splits a call needs (the few-shot pool's too)
must be there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aptune.data.files import DataFormatError, iter_json_array, iter_jsonl, read_csv
from aptune.data.resolve import DataSource, load_hub_dataset, resolve_data

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing", "medical_genetics",
    "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy", "prehistory",
    "professional_accounting", "professional_law", "professional_medicine", "professional_psychology",
    "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology", "world_religions",
)
MMLU_SCORINGS = ("options", "letters")
LETTERS = "ABCDE"


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question, formatted for log-likelihood scoring.

    Attributes:
        context: the prompt, ending right before the answer (``"...\\nAnswer:"``).
        choices: the scored continuations without the delimiter (option texts, or letters).
        answer: index of the right choice.
        id: identifier for reports (``file:line`` when the data has none).
        group: sub-task for breakdowns and few-shot sampling (the MMLU subject).
        description: text placed once before the few-shot examples and the question.
        target_delimiter: placed between context and continuation.
    """

    context: str
    choices: tuple[str, ...]
    answer: int
    id: str = ""
    group: str = ""
    description: str = ""
    target_delimiter: str = " "


@dataclass
class MCDataset:
    """Items of one multiple-choice task, plus a pool for few-shot examples and metadata."""

    name: str
    items: list[MCItem]
    source: DataSource
    scoring: str = "options"
    fewshot_pool: list[MCItem] | None = None
    split: str = ""


def _question_item(question: str, choices: Sequence[str], answer: int, item_id: str, group: str = "") -> MCItem:
    """lm-eval's ``Question: ...\\nAnswer:`` prompt; ``Answer:`` alone when there is no question."""
    context = f"Question: {question.strip()}\nAnswer:" if question.strip() else "Answer:"
    return MCItem(context, tuple(choices), answer, item_id, group)


# ---------------------------------------------------------------------------------------------- ARC

_ARC_SPLITS = {"train": ("Train", "train"), "dev": ("Dev", "validation"), "validation": ("Dev", "validation"),
               "test": ("Test", "test")}


def _arc_item(record: Any, path: str, line: int) -> MCItem:
    try:
        question = record["question"]
        stem = question["stem"]
        labels = [choice["label"] for choice in question["choices"]]
        texts = [choice["text"] for choice in question["choices"]]
        key = record["answerKey"]
    except (KeyError, TypeError) as err:
        raise DataFormatError(path, line, f"not an ARC record (missing {err})") from None
    if key not in labels:
        raise DataFormatError(path, line, f"answerKey {key!r} is not one of the choice labels {labels}")
    return _question_item(stem, texts, labels.index(key), str(record.get("id", f"{path}:{line}")))


def load_arc(subset: str = "easy", split: str = "dev", data_dir: str | Path | None = None) -> MCDataset:
    """ARC-Easy or ARC-Challenge (``subset`` ``"easy"``/``"challenge"``), split ``train``/``dev``/``test``."""
    subset_key = subset.lower().replace("arc-", "").replace("arc_", "")
    if subset_key not in ("easy", "challenge"):
        raise ValueError(f"ARC subset must be 'easy' or 'challenge', got {subset!r}")
    if split not in _ARC_SPLITS:
        raise ValueError(f"ARC split must be one of train, dev, test, got {split!r}")
    folder = f"ARC-{subset_key.capitalize()}"
    file_split, hub_split = _ARC_SPLITS[split]
    resolved = resolve_data(
        f"{folder} {split}",
        [f"{folder}/{folder}-{file_split}.jsonl"],
        data_dir=data_dir,
        hub_loader=lambda: load_hub_dataset("allenai/ai2_arc", folder, split=hub_split),
        hub_id=f"allenai/ai2_arc:{folder}",
    )
    if resolved.hub_data is not None:
        items = []
        for index, row in enumerate(resolved.hub_data):
            record = {"id": row["id"], "question": {"stem": row["question"], "choices": [
                {"text": text, "label": label} for text, label in zip(row["choices"]["text"], row["choices"]["label"])
            ]}, "answerKey": row["answerKey"]}
            items.append(_arc_item(record, f"hub:{hub_split}", index))
    else:
        path = resolved.paths[0]
        items = [_arc_item(record, str(path), line) for line, record in iter_jsonl(path)]
    return MCDataset(f"arc_{subset_key}", items, resolved.source, split=file_split.lower())


# --------------------------------------------------------------------------------------------- SciQ

_SCIQ_FIELDS = ("question", "distractor1", "distractor2", "distractor3", "correct_answer")


def _sciq_item(record: Any, path: str, line: int, include_support: bool) -> MCItem:
    if not isinstance(record, dict) or any(not isinstance(record.get(key), str) for key in _SCIQ_FIELDS):
        missing = [key for key in _SCIQ_FIELDS if not isinstance(record, dict) or not isinstance(record.get(key), str)]
        raise DataFormatError(path, line, f"SciQ record lacks string field(s) {missing}")
    choices = (record["distractor1"], record["distractor2"], record["distractor3"], record["correct_answer"])
    item = _question_item(record["question"], choices, 3, f"{path}:{line}")
    support = (record.get("support") or "").strip()
    if include_support and support:
        item = MCItem(f"{support}\n{item.context}", item.choices, item.answer, item.id)
    return item


def load_sciq(split: str = "test", include_support: bool = False, data_dir: str | Path | None = None) -> MCDataset:
    """SciQ ``test`` or ``valid``; the support passage is left out unless ``include_support``."""
    split_key = {"validation": "valid", "dev": "valid"}.get(split, split)
    if split_key not in ("test", "valid", "train"):
        raise ValueError(f"SciQ split must be test, valid or train, got {split!r}")
    hub_split = {"valid": "validation"}.get(split_key, split_key)
    resolved = resolve_data(
        f"SciQ {split_key}",
        [f"SciQ/{split_key}.json"],
        data_dir=data_dir,
        hub_loader=lambda: load_hub_dataset("allenai/sciq", split=hub_split),
        hub_id="allenai/sciq",
    )
    if resolved.hub_data is not None:
        items = [_sciq_item(dict(row), f"hub:{hub_split}", index, include_support)
                 for index, row in enumerate(resolved.hub_data)]
    else:
        path = resolved.paths[0]
        items = [_sciq_item(record, str(path), line, include_support) for line, record in iter_json_array(path)]
    name = "sciq" if not include_support else "sciq_support"
    return MCDataset(name, items, resolved.source, split=split_key)


# --------------------------------------------------------------------------------------------- MMLU


def mmlu_description(subject: str) -> str:
    """lm-eval's MMLU header line for a subject."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def _mmlu_item(question: str, options: Sequence[str], letter: str, subject: str, item_id: str, scoring: str,
               path: str, line: int | None) -> MCItem:
    letter = letter.strip()
    if letter not in LETTERS[: len(options)]:
        raise DataFormatError(path, line, f"answer {letter!r} is not one of {', '.join(LETTERS[: len(options)])}")
    answer = LETTERS.index(letter)
    description = mmlu_description(subject)
    if scoring == "letters":
        lines = [question.strip()] + [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
        return MCItem("\n".join(lines) + "\nAnswer:", tuple(LETTERS[: len(options)]), answer, item_id, subject,
                      description)
    return MCItem(f"Question: {question.strip()}\nAnswer:", tuple(options), answer, item_id, subject, description)


def _mmlu_split_key(split: str) -> tuple[str, str]:
    key = {"validation": "val", "valid": "val"}.get(split, split)
    if key not in ("dev", "val", "test"):
        raise ValueError(f"MMLU split must be dev, val or test, got {split!r}")
    return key, {"val": "validation"}.get(key, key)


def load_mmlu(
    split: str = "val",
    subjects: Sequence[str] | None = None,
    scoring: str = "options",
    data_dir: str | Path | None = None,
    with_fewshot_pool: bool = True,
) -> MCDataset:
    """MMLU items of ``split`` (``dev`` 5 per subject, ``val``, ``test``) for all or the chosen subjects.

    The few-shot pool (``MCDataset.fewshot_pool``) is the ``dev`` split of the same subjects, as in the
    original MMLU protocol, when ``split`` is not ``dev`` itself and ``with_fewshot_pool`` (zero-shot
    evaluation needs no pool, so a data folder without ``MMLU/dev`` serves it).
    """
    if scoring not in MMLU_SCORINGS:
        raise ValueError(f"MMLU scoring must be one of {', '.join(MMLU_SCORINGS)}, got {scoring!r}")
    chosen = list(subjects) if subjects else list(MMLU_SUBJECTS)
    unknown = [subject for subject in chosen if subject not in MMLU_SUBJECTS]
    if unknown:
        raise ValueError(f"unknown MMLU subject(s) {unknown}; known: {', '.join(MMLU_SUBJECTS)}")
    items, source = _load_mmlu_items(split, chosen, scoring, data_dir)
    pool = None
    if with_fewshot_pool and _mmlu_split_key(split)[0] != "dev":
        pool, _ = _load_mmlu_items("dev", chosen, scoring, data_dir)
    name = "mmlu" if subjects is None else "mmlu:" + ",".join(chosen)
    return MCDataset(name, items, source, scoring=scoring, fewshot_pool=pool, split=_mmlu_split_key(split)[0])


def _load_mmlu_items(split: str, subjects: list[str], scoring: str, data_dir) -> tuple[list[MCItem], DataSource]:
    key, hub_split = _mmlu_split_key(split)
    resolved = resolve_data(
        f"MMLU {key}",
        [f"MMLU/{key}/{subject}_{key}.csv" for subject in subjects],
        data_dir=data_dir,
        hub_loader=lambda: {subject: load_hub_dataset("cais/mmlu", subject, split=hub_split) for subject in subjects},
        hub_id="cais/mmlu",
    )
    items: list[MCItem] = []
    if resolved.hub_data is not None:
        for subject in subjects:
            for index, row in enumerate(resolved.hub_data[subject]):
                letter = LETTERS[int(row["answer"])]
                items.append(_mmlu_item(row["question"], row["choices"], letter, subject, f"{subject}[{index}]",
                                        scoring, f"hub:{hub_split}", index))
        return items, resolved.source
    for subject, path in zip(subjects, resolved.paths):
        for row in read_csv(path, num_fields=6):
            fields = row.fields
            options = [fields[str(i)] for i in range(1, 5)]
            items.append(_mmlu_item(fields["0"], options, fields["5"], subject, f"{subject}:{row.line}", scoring,
                                    str(path), row.line))
    return items, resolved.source


# ------------------------------------------------------------------------------------- generic JSONL


def load_mc_jsonl(path: str | Path) -> MCDataset:
    """Items from a JSON-lines file, one ``{"question": str, "choices": [str, ...], "answer": int}`` a line.

    The prompt is ``"Question: {question}\\nAnswer:"``; an empty question is allowed and gives the prompt
    ``"Answer:"`` (the choices alone then carry the item, as in a sentence-completion set).

    Raises:
        DataFormatError: invalid JSON, a missing or mistyped field, an empty choice, or an answer out of
            range; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"multiple-choice file {path} does not exist")
    items = []
    for line, record in iter_jsonl(path):
        if not isinstance(record, dict):
            raise DataFormatError(path, line, f"expected a JSON object, got {type(record).__name__}")
        for key in ("question", "choices", "answer"):
            if key not in record:
                raise DataFormatError(path, line, f"missing field {key!r} (expected question, choices, answer)")
        question, choices, answer = record["question"], record["choices"], record["answer"]
        if not isinstance(question, str):
            raise DataFormatError(path, line, "field 'question' must be a string")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise DataFormatError(path, line, "field 'choices' must be a list of at least two strings")
        empty = [number for number, choice in enumerate(choices) if not choice.strip()]
        if empty:
            raise DataFormatError(path, line, f"choice {empty[0]} of 'choices' is empty; every choice needs text (an "
                                              f"empty one is scored as a bare space and can win)")
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise DataFormatError(
                path, line, f"field 'answer' must be an integer index in [0, {len(choices) - 1}], got {answer!r}"
            )
        item_id = str(record.get("id", f"{path.name}:{line}"))
        items.append(_question_item(question, choices, answer, item_id, str(record.get("subject", ""))))
    if not items:
        raise DataFormatError(path, None, "no items")
    return MCDataset(path.stem, items, DataSource("file", str(path)))


# ------------------------------------------------------------------------------------------ by name

MC_TASKS = ("arc-easy", "arc-challenge", "sciq", "mmlu")


def load_mc_task(
    name: str,
    split: str | None = None,
    data_dir: str | Path | None = None,
    subjects: Sequence[str] | None = None,
    scoring: str = "options",
    include_support: bool = False,
    num_fewshot: int = 0,
) -> MCDataset:
    """Load a multiple-choice task by name: ``arc-easy``, ``arc-challenge``, ``sciq`` or ``mmlu``.

    Default splits: ARC ``dev``, SciQ ``test``, MMLU ``val``. ``subjects`` and ``scoring`` apply to MMLU,
    ``include_support`` to SciQ. With ``num_fewshot > 0`` the few-shot pool is another split, as in
    lm-eval: ARC ``train``, SciQ ``valid`` (for ``test``; the shared data has no SciQ train), MMLU ``dev``.
    """
    key = name.lower().replace("_", "-")
    if key in ("arc-easy", "arc-challenge"):
        subset = key.split("-")[1]
        dataset = load_arc(subset, split or "dev", data_dir)
        if num_fewshot > 0 and dataset.split != "train":
            dataset.fewshot_pool = load_arc(subset, "train", data_dir).items
        return dataset
    if key == "sciq":
        dataset = load_sciq(split or "test", include_support, data_dir)
        if num_fewshot > 0 and dataset.split == "test":
            dataset.fewshot_pool = load_sciq("valid", include_support, data_dir).items
        return dataset
    if key == "mmlu":
        return load_mmlu(split or "val", subjects, scoring, data_dir, with_fewshot_pool=num_fewshot > 0)
    raise ValueError(f"unknown multiple-choice task {name!r}; choose one of {', '.join(MC_TASKS)}")
