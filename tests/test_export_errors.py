"""`aptune export` refuses what would go wrong with one line and exit status 2, before writing anything: an
output that is (inside, or around) what is exported, an export of the wrong kind for the format, an output
folder that holds something else. A failed export leaves nothing behind, and an earlier export at the output
stays as it was (``aptune.export.staging``)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from conftest import random_binary_masks
from test_gguf_export import pruned_export as llama_export

from aptune.cli import main
from aptune.export import gguf, onnx
from aptune.export.staging import staged
from aptune.model import APTModel
from aptune.models import load_model, load_tokenizer


def bert_export(base, folder):
    """A pruned export of the tiny BERT classifier ``base`` (with its MiniLM tokenizer)."""
    apt = APTModel(load_model(base, head="sequence-classification", num_labels=2), seed=0)
    random_binary_masks(apt, seed=0, keep=0.6, keep_hidden=0.8, empty_site=False)
    return apt.export(folder, tokenizer=load_tokenizer(base))


def snapshot(folder):
    """Every file under ``folder`` (and the folder's own entries) with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def one_line_error(capsys) -> str:
    """The command's error: one line, the last, and no traceback (llama.cpp's own warnings may come before)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and [line for line in lines if line.startswith("aptune ")] == lines[-1:], err
    assert lines[-1].startswith("aptune export: error: "), err
    return lines[-1]


@pytest.fixture(scope="module")
def encoder(tiny_base, tmp_path_factory):
    return bert_export(tiny_base, tmp_path_factory.mktemp("encoder") / "export")


# ------------------------------------------------------------------ output inside what is exported


@pytest.mark.parametrize("where", ["itself", "inside", "around"])
def test_onnx_output_overlapping_the_export_is_refused_before_writing(encoder, where, capsys):
    output = {"itself": encoder, "inside": encoder / "onnx", "around": encoder.parent}[where]
    before = snapshot(encoder.parent)
    assert main(["export", str(encoder), "--format", "onnx", "--output", str(output)]) == 2
    err = one_line_error(capsys)
    assert f"--output {output}" in err and "must be another folder" in err and f"{encoder.name}-onnx" in err
    assert snapshot(encoder.parent) == before


@pytest.mark.parametrize("output", ["runs/x", "runs/x/checkpoints", "runs/x/checkpoints/step-0000400",
                                    "runs/x/checkpoints/step-0000400/out", "runs"])
def test_hf_output_in_the_run_or_its_checkpoints_is_refused(tmp_path, monkeypatch, output, capsys):
    """Checked before the checkpoint is even read: the fake checkpoint here would fail every later step."""
    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "runs/x/checkpoints/step-0000400"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    (tmp_path / "runs/x/config.yaml").write_text("model: {}\n")
    before = snapshot(tmp_path)
    for source in ("runs/x", "runs/x/checkpoints/step-0000400"):
        assert main(["export", source, "--output", output]) == 2
        err = one_line_error(capsys)
        assert f"--output {output}" in err and "must be another folder" in err
    assert snapshot(tmp_path) == before


def test_gguf_beside_the_export_files_is_written(tmp_path, capsys):
    """A new .gguf file inside the export folder overwrites nothing of it: allowed (and the export still is one)."""
    _, _, export = llama_export(tmp_path, groups=[[1, 1], [1, 1], [1, 1], [1, 1]])
    before = snapshot(export)
    assert main(["export", str(export), "--format", "gguf", "--output", str(export / "model.gguf"),
                 "--pad-empty"]) == 0
    after = snapshot(export)
    assert set(after) - set(before) == {"model.gguf"} and all(after[k] == v for k, v in before.items())


# ------------------------------------------------------------------ the wrong kind of export


def test_gguf_of_an_encoder_export_names_the_right_formats(encoder, tmp_path, capsys):
    output = tmp_path / "encoder.gguf"
    assert main(["export", str(encoder), "--format", "gguf", "--output", str(output)]) == 2
    err = one_line_error(capsys)
    assert "BertForSequenceClassification" in err and "LLaMA-family decoders" in err and "--format onnx" in err
    assert not output.exists() and not list(tmp_path.iterdir())


def test_onnx_of_a_decoder_export_names_the_right_formats(tmp_path, capsys):
    _, _, export = llama_export(tmp_path, groups=[[1, 1], [1, 1], [1, 1], [1, 1]])
    output = tmp_path / "onnx"
    assert main(["export", str(export), "--format", "onnx", "--output", str(output)]) == 2
    err = one_line_error(capsys)
    assert "LlamaForCausalLM" in err and "encoders" in err and "sequence-classification" in err
    assert "--format gguf" in err and not output.exists()


# ------------------------------------------------------------------ outputs that exist


def test_an_output_folder_holding_other_files_is_refused(encoder, tmp_path, capsys):
    output = tmp_path / "notes"
    output.mkdir()
    (output / "todo.txt").write_text("keep me")
    assert main(["export", str(encoder), "--format", "onnx", "--output", str(output)]) == 2
    err = one_line_error(capsys)
    assert f"--output {output} already exists" in err and "not a previous ONNX export" in err
    assert snapshot(output) == {"todo.txt": hashlib.sha256(b"keep me").hexdigest()}


def test_a_previous_onnx_export_is_replaced_whole(encoder, tmp_path):
    output = tmp_path / "onnx"
    assert main(["export", str(encoder), "--format", "onnx", "--output", str(output), "--quantize", "int8"]) == 0
    assert (output / onnx.QUANTIZED_NAME).exists()
    assert main(["export", str(encoder), "--format", "onnx", "--output", str(output)]) == 0
    assert not (output / onnx.QUANTIZED_NAME).exists() and (output / "model.onnx").exists()  # no mix of the two
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_a_file_that_is_no_gguf_is_not_overwritten(tmp_path, capsys):
    _, _, export = llama_export(tmp_path, groups=[[1, 1], [1, 1], [1, 1], [1, 1]])
    output = tmp_path / "notes.gguf"
    output.write_text("not a model")
    assert main(["export", str(export), "--format", "gguf", "--output", str(output), "--pad-empty"]) == 2
    assert "not a previous GGUF export" in one_line_error(capsys) and output.read_text() == "not a model"


# ------------------------------------------------------------------ a failed export leaves nothing


def test_a_failed_onnx_check_removes_the_new_folder_and_keeps_the_previous(encoder, tmp_path, monkeypatch, capsys):
    output = tmp_path / "onnx"

    def failing_check(path, *args, **kwargs):
        raise ValueError(f"{path}: injected failure of the check")

    monkeypatch.setattr(onnx, "check_onnx", failing_check)
    assert main(["export", str(encoder), "--format", "onnx", "--output", str(output)]) == 2
    assert "injected failure" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its .partial-<pid> stage
    monkeypatch.undo()
    assert main(["export", str(encoder), "--format", "onnx", "--output", str(output)]) == 0
    before = snapshot(output)
    monkeypatch.setattr(onnx, "check_onnx", failing_check)
    assert main(["export", str(encoder), "--format", "onnx", "--output", str(output), "--quantize", "int8"]) == 2
    assert snapshot(output) == before and sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_a_refused_gguf_file_is_deleted_and_the_previous_kept(tmp_path, monkeypatch, capsys):
    """A float32 check made impossible to pass (a relative tolerance far below float32's rounding) stops the
    export: the file it refused is gone, the file that was there before is untouched."""
    _, _, export = llama_export(tmp_path, groups=[[1, 1], [1, 1], [1, 1], [1, 1]])
    out = tmp_path / "out"
    out.mkdir()
    path = out / "tiny.gguf"
    monkeypatch.setattr(gguf, "RTOL", 1e-12)
    assert main(["export", str(export), "--format", "gguf", "--output", str(path), "--dtype", "float32",
                 "--pad-empty"]) == 2
    err = one_line_error(capsys)
    assert "does not compute the export" in err and "of the largest |logit|" in err and "allowed: 1e-12" in err
    assert list(out.iterdir()) == []
    path.write_bytes(b"GGUF an earlier export")
    assert main(["export", str(export), "--format", "gguf", "--output", str(path), "--dtype", "float32",
                 "--pad-empty"]) == 2
    assert path.read_bytes() == b"GGUF an earlier export" and [p.name for p in out.iterdir()] == ["tiny.gguf"]


def test_a_failed_quantised_file_leaves_neither_file(tmp_path, monkeypatch, capsys):
    _, _, export = llama_export(tmp_path, groups=[[1, 1], [1, 1], [1, 1], [1, 1]])
    out = tmp_path / "out"
    real_check = gguf.check_gguf

    def check_failing_on_q8_0(path, *args, **kwargs):
        if ".q8_0." in str(path):
            raise ValueError(f"{path}: injected failure of the quantised file's check")
        return real_check(path, *args, **kwargs)

    monkeypatch.setattr(gguf, "check_gguf", check_failing_on_q8_0)
    assert main(["export", str(export), "--format", "gguf", "--output", str(out / "m.gguf"), "--pad-empty",
                 "--quantize", "q8_0"]) == 2
    assert "injected failure" in one_line_error(capsys)
    assert not out.exists()  # the folder made for the files went with them


# ------------------------------------------------------------------ the staging itself


def test_staged_replaces_only_on_success(tmp_path):
    output = tmp_path / "deep" / "out"

    def is_previous(folder):
        return (folder / "mark").is_file()

    with pytest.raises(RuntimeError):
        with staged([output], previous=is_previous, kind="test", folder=True) as (path,):
            path.mkdir()
            (path / "mark").write_text("new")
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []  # the stage and the folders made for it
    with staged([output], previous=is_previous, kind="test", folder=True) as (path,):
        path.mkdir()
        (path / "mark").write_text("first")
    assert (output / "mark").read_text() == "first" and [p.name for p in output.parent.iterdir()] == ["out"]
    with staged([output], previous=is_previous, kind="test", folder=True) as (path,):
        path.mkdir()
        (path / "other").write_text("second")
    assert [p.name for p in output.iterdir()] == ["other"]  # replaced whole, not merged


def test_the_export_folder_config_names_the_stock_type(encoder):
    """The export's config.json says "bert" (what AutoConfig and AutoTokenizer know) and keeps its own classes in
    auto_map and architectures (what trust_remote_code=True loads)."""
    config = json.loads((encoder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["aptune_base_model_type"] == "bert"
    assert config["architectures"] == ["AptuneBertForSequenceClassification"]
    assert config["auto_map"]["AutoConfig"] == "modeling_aptune.AptuneBertConfig"
    model = load_model(encoder, head="sequence-classification")
    assert type(model).__name__ == "AptuneBertForSequenceClassification"
    assert model(torch.tensor([[101, 2023, 102]])).logits.shape == (1, 2)


def test_a_checkpoint_export_is_staged_and_a_failure_keeps_the_earlier_one(tiny_base, tmp_path, monkeypatch,
                                                                           capsys):
    """The Hugging Face export of a run stopped early: written under its own name (the card names the folder),
    and a failure after some files were written leaves the earlier export as it was."""
    from test_train_loop import TINY_RUN

    from aptune.config import load_config
    from aptune.export import hf
    from aptune.train import train

    run = tmp_path / "run"
    train(load_config(None, [f"output_dir={run}", f"model.name={tiny_base}", *TINY_RUN,
                             "train.checkpoint_every=8"]), stop_after=16)
    out = tmp_path / "early"
    assert main(["export", str(run), "--output", str(out)]) == 0
    assert 'from_pretrained("early"' in (out / "README.md").read_text()
    before = snapshot(out)

    def full_disk(*args, **kwargs):  # the card is written last, after the weights and the tokenizer
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf, "write_model_card", full_disk)
    assert main(["export", str(run / "checkpoints" / "step-0000008"), "--output", str(out)]) == 2
    assert "No space left on device" in one_line_error(capsys)
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["early", "run"]
