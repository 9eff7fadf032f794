"""How a file of generated answers (``aptune generate``) compares with the data set's own: empty answers, length in
tokens, and answers that loop (some four-word sequence at least four times).

    python benchmarks/answer_stats.py results/llama/recovery/self_answers/alpaca_smollm2-135m.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter

from aptune.models import load_tokenizer


def loops(text: str) -> bool:
    words = text.split()
    grams = Counter(tuple(words[i:i + 4]) for i in range(len(words) - 3))
    return bool(grams) and grams.most_common(1)[0][1] >= 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("answers", help="JSONL with output (the model's) and dataset_output")
    parser.add_argument("--model", default="smollm2-135m", help="tokenizer to count tokens with")
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.model)
    rows = [json.loads(line) for line in open(args.answers)]
    print(f"records {len(rows)}, empty answers {sum(not row['output'] for row in rows)}")
    for field in ("output", "dataset_output"):
        lengths = [len(tokenizer(row[field], add_special_tokens=False)["input_ids"]) for row in rows]
        print(f"{field}: tokens mean {statistics.mean(lengths):.1f}, median {statistics.median(lengths)}, "
              f"looping {sum(loops(row[field]) for row in rows)}")


if __name__ == "__main__":
    main()
