"""Every user error the command line knows ends in one line, ``aptune <cmd>: error: ...``, with exit code 2 and no
traceback; ``--debug`` shows the traceback. The cases run in this process (``aptune.cli.main``, output captured);
one runs as a real ``aptune`` process, where an uncaught error would print Python's traceback."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_bert
from test_train_loop import TINY_RUN

from aptune.cli import main
from aptune.model import APTModel
from aptune.models import load_model, load_tokenizer
from aptune.train.run_folder import claim

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def made(tiny_base, tmp_path_factory):
    """The files the cases name: an encoder export, a finished-looking run folder, data files, a broken YAML."""
    where = tmp_path_factory.mktemp("cli-errors")
    export = APTModel(load_model(tiny_base, head="sequence-classification", num_labels=2), seed=0).export(
        where / "run" / "export", tokenizer=load_tokenizer(tiny_base))
    (where / "finished").mkdir()
    (where / "finished" / "summary.json").write_text("{}")
    (where / "latin1.csv").write_bytes("text,label\ncaf\xe9 cr\xe8me,1\nfine,0\n".encode("latin-1"))
    (where / "broken.yaml").write_text("train: {steps: 10\n")
    (where / "plan.yaml").write_text(yaml.safe_dump({"seeds": [1], "runs": {"a": {}}}))
    (where / "tiny").mkdir()
    tiny_bert(num_labels=2).save_pretrained(where / "tiny")
    return {"where": where, "export": export, "base": tiny_base}


def _train(made, *overrides):
    return ["train", f"model.name={made['base']}", *TINY_RUN, *overrides]


# (case, argv made from the fixture's files, what the message must name). Each is a mistake a user makes.
CASES = {
    "a config key that does not exist": (lambda m: ["train", "prune.densty=0.5"], "prune.densty"),
    "a value out of range": (lambda m: ["train", "prune.density=1.5"], "prune.density must lie in (0, 1]"),
    "a YAML syntax error": (lambda m: ["train", "--config", str(m["where"] / "broken.yaml")], "broken.yaml:"),
    "a config file that is not there": (lambda m: ["train", "--config", str(m["where"] / "none.yaml")], "none.yaml"),
    "a run too short for the schedule": (lambda m: ["train", "train.steps=20"], "train.steps=32"),
    "a run folder that holds a finished run": (
        lambda m: _train(m, f"output_dir={m['where'] / 'finished'}"), "holds a finished run"),
    "a run folder another run holds": (lambda m: _train(m, f"output_dir={m['where'] / 'busy'}"), "is in use by PID"),
    "a sequence longer than the model's positions": (
        lambda m: _train(m, f"output_dir={m['where'] / 'long'}", "data.max_length=100000"), "data.max_length=100000"),
    "a data file that is not UTF-8": (
        lambda m: _train(m, f"output_dir={m['where'] / 'latin'}", f"data.train_file={m['where'] / 'latin1.csv'}"),
        "latin1.csv:2: is not UTF-8 text"),
    "a data file that is not there": (
        lambda m: _train(m, f"output_dir={m['where'] / 'nofile'}", f"data.train_file={m['where'] / 'none.csv'}"),
        "none.csv does not exist"),
    "a model that does not exist": (lambda m: ["eval", "--model", "nosuchmodel", "--task", "sst2"], "nosuchmodel"),
    "an export into its own source folder": (
        lambda m: ["export", str(m["export"].parent), "--format", "onnx", "--output", str(m["export"])],
        "--output"),
    "a GGUF file of an encoder": (
        lambda m: ["export", str(m["export"]), "--format", "gguf", "--output", str(m["where"] / "x.gguf")], "GGUF"),
    "a folder that is no export": (
        lambda m: ["export", str(m["where"] / "tiny"), "--format", "onnx", "--output", str(m["where"] / "o")],
        "aptune_structure.json"),
    "a density that keeps nothing": (
        lambda m: ["prune", "--model", str(m["where"] / "tiny"), "--density", "1e-6", "--output",
                   str(m["where"] / "p")], "--density 1e-06"),
    "a density outside (0, 1]": (lambda m: ["prune", "--density", "1.5", "--output", str(m["where"] / "p")],
                                 "density must lie in (0, 1]"),
    "a plan with an unknown adapter target": (lambda m: ["plan", "adapter.targets=q,ffn"], "adapter.targets"),
    "bench arguments that repeat a name": (lambda m: ["bench", "a=minilm", "a=minilm"], "given twice"),
    "ablation seeds that are not numbers": (
        lambda m: ["ablate", str(m["where"] / "plan.yaml"), "--seeds", "7,x", "--dry-run"], "--seeds"),
    "a shipped config that does not exist": (lambda m: ["configs", "copy", "minilm/nope", "x.yaml"], "minilm/nope"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_user_error_is_one_line_with_exit_code_2(case, made):
    make_argv, named = CASES[case]
    argv = make_argv(made)
    holder = claim(made["where"] / "busy", resume=False, overwrite=False) if "busy" in str(argv) else None
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        if holder is not None:
            holder.close()
    printed = out.getvalue() + err.getvalue()
    assert code == 2, printed
    assert "Traceback" not in printed
    message = err.getvalue().strip().splitlines()[-1]
    assert message.startswith(f"aptune {argv[0]}: error: ") and named in message, message


def _aptune(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "aptune", *argv], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT)


def test_a_real_process_prints_one_line_and_debug_prints_the_traceback():
    plain = _aptune("train", "train.steps=20")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().startswith("aptune train: error: ") and len(plain.stderr.strip().splitlines()) == 1
    debug = _aptune("train", "train.steps=20", "--debug")
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "the shortest run that holds this schedule has train.steps=32" in debug.stderr
