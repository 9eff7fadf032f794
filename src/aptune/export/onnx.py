"""ONNX export of an encoder export (sequence classification), checked in ONNX Runtime.

An aptune export reloads with stock ``transformers`` (its layers keep their own head counts and FFN widths);
``torch.onnx.export`` (the dynamo exporter) traces that model into a graph with dynamic batch and sequence
axes, so the per-layer shapes become constants of the graph and ONNX Runtime needs no custom operator. The
graph is then run in ONNX Runtime on real sentences beside the PyTorch model; a difference in the logits above
the tolerance stops the export. Optionally ONNX Runtime's dynamic int8 quantisation writes a second file.

Needs the ``deploy`` extra (``pip install -e ".[deploy]"``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from aptune.models.loading import load_model, load_tokenizer

TOLERANCE = 1e-4  # max |logit difference|, ONNX Runtime against PyTorch, float32
CHECK_SENTENCES = ["a gripping, funny and thoroughly enjoyable film", "the plot never takes off at all",
                   "it is neither good nor bad", "an utterly forgettable two hours"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


class _Logits(torch.nn.Module):
    """The model as a function of (input_ids, attention_mask) -> logits, what the graph takes and returns."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(export_dir: str | Path, output: str | Path, quantize: bool = False) -> dict:
    """Write ``output/model.onnx`` (and ``model.int8.onnx`` with ``quantize``) from the encoder export in
    ``export_dir``, with its tokenizer files; returns what was written and the checked differences."""
    _require_runtime()
    export_dir, output = Path(export_dir), Path(output)
    model = load_model(export_dir, head="sequence-classification").float().eval()
    tokenizer = load_tokenizer(export_dir)
    output.mkdir(parents=True, exist_ok=True)
    path = output / "model.onnx"
    sample = dict(tokenizer(CHECK_SENTENCES[:2], padding=True, return_tensors="pt"))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with torch.no_grad():
        program = torch.onnx.export(_Logits(model), (sample["input_ids"], sample["attention_mask"]), dynamo=True,
                                    input_names=["input_ids", "attention_mask"], output_names=["logits"],
                                    dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}), verbose=False)
    program.save(str(path))
    report = {"onnx": str(path), "max_abs_diff": check_onnx(path, model, tokenizer)}
    if quantize:
        quantized = output / "model.int8.onnx"
        quantize_int8(path, quantized)
        report["int8"] = str(quantized)
        report["int8_max_abs_diff"] = check_onnx(quantized, model, tokenizer, tolerance=None)
    for name in TOKENIZER_FILES + ("config.json",):
        if (export_dir / name).exists():
            shutil.copy2(export_dir / name, output / name)
    return report


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
