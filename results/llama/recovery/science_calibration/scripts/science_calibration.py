# Historical record (was benchmarks/science_calibration.py): run it at commit 78be17c, where it ran as it stands.
"""Write science question-answer records for ``prune.calibration_file`` (issue 13: how the calibration batches
are chosen), from the training splits of the shared data that no evaluation reads.

Sources: ARC-Easy and ARC-Challenge *train* (the evaluation reads their dev splits) and SciQ *valid* (the
evaluation reads its test split). Records are Alpaca-format, in one of two forms (``--form``):

* ``option``: the question as the instruction, SciQ's support paragraph (when it has one) as the input, the
  correct option's text as the output, the form the multiple-choice scorer reads an answer in. ARC and SciQ.
* ``support``: SciQ's questions that have a support paragraph, the paragraph and the answer as the output
  ("<support> So the answer is <answer>."): a long science text for the gradient to run through.

A seeded sample of ``--count`` records.

    python benchmarks/science_calibration.py --out results/llama/recovery/science_calibration/science.jsonl
    python benchmarks/science_calibration.py --form support --count 256 \
        --out results/llama/recovery/science_calibration/sciq_support.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from aptune.data.files import iter_jsonl
from aptune.data.resolve import find_shared_data_dir


def arc_records(path: Path) -> list[dict[str, str]]:
    records = []
    for _, item in iter_jsonl(path):
        question = item["question"]
        answer = next(c["text"] for c in question["choices"] if c["label"] == item["answerKey"])
        records.append({"instruction": question["stem"], "input": "", "output": answer})
    return records


def sciq_records(path: Path) -> list[dict[str, str]]:
    return [{"instruction": item["question"], "input": item["support"].strip(), "output": item["correct_answer"]}
            for item in json.loads(path.read_text())]


def sciq_support_records(path: Path) -> list[dict[str, str]]:
    return [{"instruction": item["question"], "input": "",
             "output": f"{item['support'].strip()} So the answer is {item['correct_answer']}."}
            for item in json.loads(path.read_text()) if item["support"].strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON-lines file to write")
    parser.add_argument("--form", choices=["option", "support"], default="option", help="see the module's text")
    parser.add_argument("--count", type=int, default=512, help="records to sample (default 512)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="the shared data folder (default: found beside the checkout)")
    args = parser.parse_args()
    root = Path(args.data_dir) if args.data_dir else find_shared_data_dir()
    if root is None:
        raise SystemExit("no shared data folder found; pass --data-dir")
    if args.form == "support":
        pool = sciq_support_records(root / "SciQ" / "valid.json")
    else:
        pool = (arc_records(root / "ARC-Easy" / "ARC-Easy-Train.jsonl")
                + arc_records(root / "ARC-Challenge" / "ARC-Challenge-Train.jsonl")
                + sciq_records(root / "SciQ" / "valid.json"))
    if args.count > len(pool):
        raise SystemExit(f"--count {args.count} is more than the {len(pool)} records the sources hold")
    sample = random.Random(args.seed).sample(pool, args.count)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(record) + "\n" for record in sample))
    print(f"{len(sample)} of {len(pool)} records -> {out}")


if __name__ == "__main__":
    main()
