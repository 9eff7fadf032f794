"""``aptune export CHECKPOINT --output DIR``: export a checkpoint of ``aptune train`` as a merged, physically
smaller Hugging Face model (what a finished run writes to ``<output_dir>/export``).

``aptune export RUN_OR_EXPORT --format onnx --output DIR [--quantize int8]`` turns an encoder's export (or a
finished run's) into an ONNX graph checked in ONNX Runtime (``aptune.export.onnx``).

``aptune export RUN_OR_EXPORT --format gguf --output FILE.gguf [--dtype float32|float16] [--quantize q8_0]
[--pad-empty] [--ffn-multiple N]`` turns a LLaMA-family decoder's export into a GGUF file for llama.cpp, checked
in llama.cpp (``aptune.export.gguf``).

A run stopped early (killed, out of time) leaves its checkpoints; this turns one of them into the same kind
of export. CHECKPOINT is a checkpoint folder (``runs/x/checkpoints/step-0000400``) or a run folder (its
latest checkpoint). The run's ``config.yaml`` says which model to rebuild.

Every format writes beside its output and moves the result into place only once it is complete and checked
(``aptune.export.staging``): a failed export leaves nothing, an earlier export of the same kind at ``--output``
is replaced, anything else there is refused, and so is an output inside (or holding) what is exported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "export"
HELP = ("export a checkpoint of `aptune train` as a merged, physically smaller Hugging Face model, or an export "
        "as ONNX (encoders) or GGUF (decoders)")
GGUF_QUANTIZATIONS = ("q8_0", "q4_0", "q4_k_m")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path,
                        help="a checkpoint folder (runs/x/checkpoints/step-N) or a run folder (its latest checkpoint); "
                             "with --format onnx or gguf: an export folder or a finished run folder")
    parser.add_argument("--output", type=Path, required=True, help="export folder (--format gguf: a .gguf file)")
    parser.add_argument("--format", choices=("hf", "onnx", "gguf"), default="hf",
                        help="hf: merged Hugging Face model (default); onnx: ONNX graph of an encoder export; "
                             "gguf: llama.cpp file of a LLaMA-family decoder export")
    parser.add_argument("--quantize", choices=("int8",) + GGUF_QUANTIZATIONS,
                        help="--format onnx: int8, ONNX Runtime's dynamic quantisation (model_quantized.onnx); "
                             "--format gguf: a llama.cpp type, written beside the file (NAME.<type>.gguf)")
    parser.add_argument("--dtype", choices=("float16", "float32"),
                        help="--format gguf: the file's weight type (default float16); float32 is checked to "
                             "the logit against the transformers export")
    parser.add_argument("--pad-empty", action="store_true",
                        help="--format gguf: write blocks llama.cpp cannot run empty (layer 0's attention, an FFN "
                             "after live attention) as zero blocks of the smallest size it runs: same outputs")
    parser.add_argument("--ffn-multiple", type=int,
                        help="--format gguf: FFN widths padded with zero neurons to a multiple of this (default 32, "
                             "what llama.cpp's q8_0/q4_0 blocks need; 1: as they are): same outputs")


def find_checkpoint(path: Path) -> Path:
    """The checkpoint folder ``path`` names, or the latest one of the run folder ``path``."""
    from aptune.train.checkpoint import check_checkpoint, latest_intact_checkpoint

    if (path / "trainer_state.json").is_file():
        problem = check_checkpoint(path)
        if problem:
            raise ValueError(f"checkpoint {path} is damaged: {problem}")
        return path
    latest = latest_intact_checkpoint(path / "checkpoints")
    if latest is None:
        raise FileNotFoundError(f"{path} is neither a checkpoint folder (with trainer_state.json) nor a run folder "
                                f"with an intact checkpoints/step-*; runs write checkpoints with train.checkpoint_every=N")
    return latest


def find_export(path: Path) -> Path:
    """The export folder ``path`` names: an export itself, or a finished run's ``export/``."""
    for folder in (path, path / "export"):
        if (folder / "aptune_structure.json").is_file():
            return folder
    raise FileNotFoundError(f"{path} is neither an aptune export (with aptune_structure.json) nor a finished run "
                            "folder with export/; train the run to its end, or export a checkpoint first "
                            "(aptune export runs/x --output DIR)")


def export_or_dense(source: str, scratch: Path, head: str) -> Path:
    """An export folder for ``source``: itself, a finished run's ``export/``, or (a model name or folder) the model
    exported dense, all blocks kept, into ``scratch``: so that benchmarks put dense and pruned through one path."""
    try:
        return find_export(Path(source))
    except FileNotFoundError:
        pass
    from aptune.model import APTModel
    from aptune.models import load_model, load_tokenizer

    kwargs = {"num_labels": 2} if head == "sequence-classification" else {}
    dense = APTModel(load_model(source, head=head, **kwargs), seed=0)
    return dense.export(scratch / f"{Path(source).name}-dense", tokenizer=load_tokenizer(source))


def run_onnx(args: argparse.Namespace) -> int:
    from aptune.export.onnx import export_onnx

    if args.quantize not in (None, "int8"):
        raise ValueError(f"--quantize {args.quantize} is a llama.cpp type (--format gguf); ONNX takes int8")
    source = find_export(args.checkpoint)
    report = export_onnx(source, args.output, quantize=args.quantize == "int8")
    print(f"exported {source} to {report['onnx']}: ONNX Runtime vs PyTorch, max |logit difference| "
          f"{report['max_abs_diff']:.1e}")
    if "int8" in report:
        print(f"int8 (dynamic quantisation): {report['int8']}, max |logit difference| {report['int8_max_abs_diff']:.2e}")
    return 0


def run_gguf(args: argparse.Namespace) -> int:
    from aptune.export import gguf
    from aptune.export.staging import is_gguf_file, staged

    if args.quantize not in (None,) + GGUF_QUANTIZATIONS:
        raise ValueError(f"--quantize {args.quantize} is ONNX's (--format onnx); GGUF takes "
                         + ", ".join(GGUF_QUANTIZATIONS))
    if args.output.suffix != ".gguf":
        raise ValueError(f"--output {args.output}: --format gguf writes one file; name it NAME.gguf")
    source = find_export(args.checkpoint)
    gguf.require_decoder(source)  # before the outputs are checked: the wrong format is the first thing to say
    outputs = [args.output] + ([args.output.with_suffix(f".{args.quantize}.gguf")] if args.quantize else [])
    dtype = args.dtype or "float16"
    multiple = gguf.FFN_MULTIPLE if args.ffn_multiple is None else args.ffn_multiple
    # both files are written and checked beside the outputs; a failed check leaves neither (staging)
    with staged(outputs, previous=is_gguf_file, kind="GGUF", folder=False) as paths:
        model, tokenizer = gguf.load_decoder(source)
        report = gguf.write_gguf(source, paths[0], dtype=dtype, pad_empty=args.pad_empty, model=model,
                                 tokenizer=tokenizer, ffn_multiple=multiple)
        # float32 must match to the logit; float16 rounds every weight, so its difference is reported, not judged
        check = gguf.check_gguf(paths[0], model, tokenizer, rtol=gguf.RTOL if dtype == "float32" else None)
        if args.quantize:
            gguf.quantize_gguf(paths[0], paths[1], args.quantize)
            quantized = gguf.check_gguf(paths[1], model, tokenizer, rtol=None)
    for problem in report["padded"]:
        print(f"padded with zero weights: {problem}")
    if report["zero_ffn_neurons"]:
        print(f"FFN widths padded to multiples of {multiple}: {report['zero_ffn_neurons']} zero neurons")
    print(f"exported {source} to {args.output} ({dtype}): llama.cpp vs transformers, prompt tokens "
          f"{'identical' if check['prompt_tokens_equal'] else 'differ'}, {_logit_difference(check)}, greedy tokens "
          f"{'identical' if check['greedy_equal'] else 'differ'}")
    if args.quantize:
        print(f"{args.quantize}: {outputs[1]}, {_logit_difference(quantized)}, greedy tokens "
              f"{'identical' if quantized['greedy_equal'] else 'differ'}")
    return 0


def _logit_difference(check: dict) -> str:
    """The checked difference as absolute and relative to the logits' scale (what the float32 check judges)."""
    return (f"max |logit difference| {check['max_abs_logit_diff']:.1e} ({check['relative_logit_diff']:.1e} of the "
            f"largest |logit|, {check['max_abs_logit']:.1f})")


def check_hf_output(checkpoint: Path, output: Path) -> None:
    """Refuse an ``--output`` that would write into what is exported: the checkpoint folder, the run folder
    itself or its ``checkpoints/`` (a folder such as ``runs/x/export`` beside them is fine)."""
    from aptune.export.staging import check_separate

    is_checkpoint = (checkpoint / "trainer_state.json").is_file()
    run_dir = checkpoint.parent.parent if is_checkpoint else checkpoint
    if Path(output).resolve() == run_dir.resolve():
        raise ValueError(f"--output {output} is the run folder {run_dir}; the output must be another folder, for "
                         f"example {run_dir / 'export'} (replaced if it holds an export already)")
    example = run_dir / f"export-{checkpoint.name}" if is_checkpoint else run_dir / "export"
    if is_checkpoint:
        check_separate(checkpoint, output, "the checkpoint", example)
    check_separate(run_dir / "checkpoints", output, "the run's checkpoint folder", example)


def run(args: argparse.Namespace) -> int:
    if args.format == "gguf":
        return run_gguf(args)
    if args.dtype or args.pad_empty or args.ffn_multiple is not None:
        raise ValueError("--dtype, --pad-empty and --ffn-multiple apply to --format gguf")
    if args.format == "onnx" or args.quantize:
        return run_onnx(args)
    from aptune.config import load_config
    from aptune.export.staging import staged
    from aptune.models import load_tokenizer
    from aptune.models.loading import is_aptune_export
    from aptune.train.checkpoint import restore_model
    from aptune.train.recipe import build_model, export_dtype

    check_hf_output(args.checkpoint, args.output)
    folder = find_checkpoint(args.checkpoint)
    run_dir = folder.parent.parent
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir / 'config.yaml'} not found: a checkpoint lives in <run>/checkpoints/, "
                                "beside the run's config.yaml")
    config = load_config(run_dir / "config.yaml")
    state = json.loads((folder / "trainer_state.json").read_text())
    with staged([args.output], previous=is_aptune_export, kind="Hugging Face", folder=True) as (staging,):
        model = build_model(config, state.get("num_labels"), state.get("label_names", []))
        restore_model(model, folder)
        if not model.state.is_binary():
            raise ValueError(f"{folder} was saved while the masks were moving toward a pruning step (soft values); "
                             "export a checkpoint taken outside a mask-decay window, or the finished run's export")
        model.export(staging, tokenizer=load_tokenizer(config.model.name),
                     card={"base_model": config.model.name, "task": config.data.task, "config": config.to_dict(),
                           "command": f"aptune export {args.checkpoint} --output {args.output}"},
                     dtype=export_dtype(config))
    print(f"exported {folder} (step {state['step']}, density {model.num_params() / model.original_params:.3f}) "
          f"to {args.output}")
    return 0
