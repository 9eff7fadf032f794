"""``aptune generate``: a model's own greedy answers to instruction records, written as Alpaca records.

Examples::

    aptune generate --model smollm2-135m --data alpaca --output answers.jsonl --max-length 256
    aptune train --config configs/smollm2/alpaca.yaml data.train_responses=answers.jsonl

The answers are recovery data that needs nothing beyond the model itself: a pruned model tuned on the dense
model's answers learns to say what the dense model said (sequence-level distillation, without a teacher in the
training loop). ``data.train_responses`` swaps them in for the training records' outputs, matched by
instruction and input; the held-out records keep the data set's own answers, so the held-out loss is measured
as before. Each line of the output has ``instruction``, ``input``, ``output`` (the model's answer) and
``dataset_output`` (the record's own); ``OUTPUT.meta.json`` says which model, settings and commit made it.

``--documents N`` writes texts the model samples unprompted instead (documents like those it was pretrained
on), as Alpaca records with the instruction "Write a passage."; ``data.extra_train_file`` adds them to the
training split::

    aptune generate --model smollm2-135m --documents 832 --output model_text.jsonl
    aptune train --config configs/smollm2/alpaca.yaml data.extra_train_file=model_text.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

NAME = "generate"
HELP = ("write a model's own greedy answers to instruction records (data.train_responses), or texts it samples "
        "unprompted (--documents; data.extra_train_file): recovery data from the model itself")
DOCUMENT_INSTRUCTION = "Write a passage."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="short name (smollm2-135m), an aptune export or HF model folder, or a hub id")
    parser.add_argument("--data", default="alpaca",
                        help="'alpaca' (the shared Alpaca-format set) or a JSON / JSONL file of Alpaca records")
    parser.add_argument("--output", type=Path, required=True, help="JSON Lines file to write")
    parser.add_argument("--max-length", type=int, default=256,
                        help="prompt + answer in tokens: the data.max_length of the training that reads them")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per generate call")
    parser.add_argument("--limit", type=int, help="the first N records only (a quick look)")
    parser.add_argument("--data-dir", type=Path, help="data folder holding alpaca/ (default: as aptune train)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    sampling = parser.add_argument_group("--documents: texts sampled unprompted instead of answers")
    sampling.add_argument("--documents", type=int, help="how many texts to sample (--data is then not read)")
    sampling.add_argument("--new-tokens", type=int, default=200, help="tokens per text at most")
    sampling.add_argument("--temperature", type=float, default=0.8)
    sampling.add_argument("--top-p", type=float, default=0.95)
    sampling.add_argument("--seed", type=int, default=1234)
    sampling.add_argument("--min-chars", type=int, default=200,
                          help="drop texts of this many characters or fewer (the model ended the document at once)")


def run(args: argparse.Namespace) -> int:
    import torch

    from aptune.data.instruct import load_instruction_records
    from aptune.eval.generate import batched_greedy_outputs
    from aptune.provenance import meta_info

    if args.batch_size < 1 or args.max_length < 2 or (args.limit is not None and args.limit < 1):
        raise ValueError("--batch-size and --limit must be >= 1, --max-length >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.documents is not None:
        return _write_documents(args)
    records, source = load_instruction_records(args.data, args.data_dir)  # bad data fails before the model loads
    records = records[:args.limit] if args.limit else records
    tokenizer, model = _load(args)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        print(f"generate {done}/{total} records, {elapsed / 60:.1f} min", flush=True)

    outputs = batched_greedy_outputs(model, tokenizer, records, args.max_length, args.batch_size,
                                     progress=progress)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w") as handle:
        for record, output in zip(records, outputs):
            line = {"instruction": record.instruction, "input": record.input, "output": output,
                    "dataset_output": record.output}
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    meta = {"model": str(args.model), "data": str(args.data), "source": f"{source.kind}: {source.location}",
            "records": len(records),
            "max_length": args.max_length, "batch_size": args.batch_size, "dtype": args.dtype,
            "seconds": round(time.perf_counter() - started, 1), "meta": meta_info()}
    Path(f"{args.output}.meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.output} ({len(records)} records) and {args.output}.meta.json")
    return 0


def _load(args: argparse.Namespace):
    """The tokenizer and the causal LM of ``--model``, in eval mode on ``--device`` in ``--dtype``."""
    import torch

    from aptune.models import load_model, load_tokenizer, resolve_device

    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, head="causal-lm", dtype=getattr(torch, args.dtype)).to(resolve_device(args.device))
    return tokenizer, model.eval()


def _write_documents(args: argparse.Namespace) -> int:
    """``--documents``: the model's own texts as Alpaca records, and ``OUTPUT.meta.json`` with the settings."""
    from aptune.eval.generate import sampled_documents
    from aptune.provenance import meta_info

    if args.documents < 1:
        raise ValueError(f"--documents must be >= 1, got {args.documents}")
    tokenizer, model = _load(args)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"generate {done}/{total} texts, {(time.perf_counter() - started) / 60:.1f} min", flush=True)

    texts = sampled_documents(model, tokenizer, args.documents, args.new_tokens, args.batch_size,
                              args.temperature, args.top_p, args.seed, args.min_chars, progress)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w") as handle:
        for text in texts:
            handle.write(json.dumps({"instruction": DOCUMENT_INSTRUCTION, "input": "", "output": text},
                                    ensure_ascii=False) + "\n")
    meta = {"model": str(args.model), "documents": args.documents, "kept": len(texts),
            "new_tokens": args.new_tokens, "temperature": args.temperature, "top_p": args.top_p,
            "seed": args.seed, "min_chars": args.min_chars, "batch_size": args.batch_size, "dtype": args.dtype,
            "seconds": round(time.perf_counter() - started, 1), "meta": meta_info()}
    Path(f"{args.output}.meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.output} ({len(texts)} of {args.documents} texts kept) and {args.output}.meta.json")
    return 0
