"""ONNX export of an encoder export (sequence classification), checked in ONNX Runtime.

An aptune export reloads with stock ``transformers`` (its layers keep their own head counts and FFN widths);
``torch.onnx.export`` (the dynamo exporter) traces that model into a graph with dynamic batch and sequence
axes, so the per-layer shapes become constants of the graph and ONNX Runtime needs no custom operator. The
graph is then run in ONNX Runtime on real sentences beside the PyTorch model; a difference in the logits above
the tolerance stops the export. Optionally ONNX Runtime's dynamic int8 quantisation writes a second file.

The folder is laid out as Hugging Face Optimum's ``ORTModelForSequenceClassification`` reads one: ``model.onnx``,
``model_quantized.onnx`` (the name Optimum's ``ORTQuantizer`` gives a quantised graph; load it with
``file_name="model_quantized.onnx"``), the tokenizer files and a ``config.json`` of the stock model type and class
(``bert`` / ``BertForSequenceClassification``, labels kept, no ``auto_map``): the graph carries the pruned shapes,
so nothing needs aptune's code, and ``AutoConfig`` / ``AutoTokenizer`` load the folder as they are. The folder is
written beside the output and moved into place once checked (:mod:`aptune.export.staging`).

Needs the ``deploy`` extra (``pip install -e ".[deploy]"``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from aptune.export.hf import base_model_type, export_kind
from aptune.export.staging import check_separate, staged
from aptune.models.loading import load_model, load_tokenizer

TOLERANCE = 1e-4  # max |logit difference|, ONNX Runtime against PyTorch, float32
CHECK_SENTENCES = ["a gripping, funny and thoroughly enjoyable film", "the plot never takes off at all",
                   "it is neither good nor bad", "an utterly forgettable two hours"]
# what tokenizers save (fast and slow files of WordPiece, BPE and SentencePiece ones); copied as they are
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model")
QUANTIZED_NAME = "model_quantized.onnx"  # Optimum's name for a quantised graph beside model.onnx


class _Logits(torch.nn.Module):
    """The model as a function of (input_ids, attention_mask) -> logits, what the graph takes and returns."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(export_dir: str | Path, output: str | Path, quantize: bool = False) -> dict:
    """Write ``output/model.onnx`` (and ``model_quantized.onnx`` with ``quantize``) from the encoder export in
    ``export_dir``, with its tokenizer files and a stock ``config.json``; returns what was written and the
    checked differences. ``output`` is replaced only by a complete, checked folder (see the module)."""
    _require_runtime()
    export_dir, output = Path(export_dir), Path(output)
    check_separate(export_dir, output, "the export folder", export_dir.with_name(f"{export_dir.name}-onnx"))
    require_encoder(export_dir)
    with staged([output], previous=lambda folder: (folder / "model.onnx").is_file(), kind="ONNX",
                folder=True) as (folder,):
        model = load_model(export_dir, head="sequence-classification").float().eval()
        tokenizer = load_tokenizer(export_dir)
        folder.mkdir()
        report = _write_checked(model, tokenizer, folder, quantize)
        _write_folder_files(export_dir, folder)
    report["onnx"] = str(output / "model.onnx")  # where the checked files are now
    if quantize:
        report["int8"] = str(output / QUANTIZED_NAME)
    return report


def require_encoder(export_dir: Path) -> None:
    """Refuse, before loading it, an export the ONNX path does not take: it traces encoders with a
    sequence-classification head (its input and output names are those of that task)."""
    kind = export_kind(export_dir)
    if kind.family == "bert" and kind.architecture.endswith("ForSequenceClassification"):
        return
    other = ("; --format gguf writes LLaMA-family decoders for llama.cpp" if kind.family == "llama" else "")
    raise ValueError(f"{export_dir} holds a {kind.model_type} {kind.architecture or 'model'}: the ONNX export takes "
                     f"encoders (BERT, RoBERTa) with a sequence-classification head{other}")


def _write_checked(model: torch.nn.Module, tokenizer, folder: Path, quantize: bool) -> dict:
    """Trace the model into ``folder/model.onnx``, check it in ONNX Runtime, and quantise it if asked."""
    path = folder / "model.onnx"
    sample = dict(tokenizer(CHECK_SENTENCES[:2], padding=True, return_tensors="pt"))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with torch.no_grad():
        program = torch.onnx.export(_Logits(model), (sample["input_ids"], sample["attention_mask"]), dynamo=True,
                                    input_names=["input_ids", "attention_mask"], output_names=["logits"],
                                    dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}), verbose=False)
    program.save(str(path))
    report = {"onnx": str(path), "max_abs_diff": check_onnx(path, model, tokenizer)}
    if quantize:
        quantized = folder / QUANTIZED_NAME
        quantize_int8(path, quantized)
        report["int8"] = str(quantized)
        report["int8_max_abs_diff"] = check_onnx(quantized, model, tokenizer, tolerance=None)
    return report


def _write_folder_files(export_dir: Path, folder: Path) -> None:
    """The tokenizer files as the export has them, and the export's config made stock (:func:`stock_config`)."""
    for name in TOKENIZER_FILES:
        if (export_dir / name).exists():
            shutil.copy2(export_dir / name, folder / name)
    config = stock_config(json.loads((export_dir / "config.json").read_text()))
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def stock_config(config: dict) -> dict:
    """An export's ``config.json`` as the stock model's: its type and class without aptune's (``bert``,
    ``BertForSequenceClassification``), without ``auto_map`` and the shape record. Labels, sizes and the rest are
    kept: ONNX runtimes read the labels from it, and the graph, not the config, holds the pruned shapes."""
    model_type = base_model_type(config)
    config = {key: value for key, value in config.items()
              if key not in ("auto_map", "aptune_structure", "aptune_base_model_type")}
    config["model_type"] = model_type
    config["architectures"] = [name.removeprefix("Aptune") for name in config.get("architectures") or []]
    return config


def check_onnx(path: Path, model: torch.nn.Module, tokenizer, tolerance: float | None = TOLERANCE) -> float:
    """Max |logit difference| between ONNX Runtime and PyTorch on real sentences, two batch sizes and lengths
    (other than the traced ones); above ``tolerance`` (when given) is an error."""
    session = inference_session(path)
    worst = 0.0
    for sentences in (CHECK_SENTENCES, CHECK_SENTENCES[1:2]):
        inputs = dict(tokenizer(sentences, padding=True, return_tensors="pt"))
        with torch.no_grad():
            expected = model(**inputs).logits.float().numpy()
        got = session.run(["logits"], {k: inputs[k].numpy() for k in ("input_ids", "attention_mask")})[0]
        worst = max(worst, float(abs(got - expected).max()))
    if tolerance is not None and worst > tolerance:
        raise ValueError(f"{path}: ONNX Runtime's logits differ from PyTorch's by {worst:.2e} (> {tolerance:.0e}); "
                         "the graph does not compute the model")
    return worst


def inference_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantize_int8(path: Path, output: Path) -> None:
    """ONNX Runtime's dynamic quantisation: int8 weights of the matmuls, activations quantised on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(path), str(output), weight_type=QuantType.QInt8)


def _require_runtime() -> None:
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if _absent(name)]
    if missing:
        raise ValueError(f"the ONNX export needs {', '.join(missing)}: pip install -e \".[deploy]\"")


def _absent(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
