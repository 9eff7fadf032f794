"""The configs ship inside the package: named without a path (``minilm/sst2``) from any directory, listed by
``aptune configs`` and written out by ``aptune configs copy``; and the built wheel carries them to a fresh
environment, where a short main job runs from outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from aptune import configs
from aptune.cli import main
from aptune.config import load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def test_a_shipped_config_loads_by_name_from_any_directory_and_the_path_form_still_works(tmp_path, monkeypatch):
    by_path = load_config(REPO / "configs" / "minilm" / "sst2.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_config("minilm/sst2") == by_path
    assert load_config("minilm/sst2.yaml") == by_path
    assert load_config("minilm/sst2_paper").distill.enabled and not by_path.distill.enabled
    with pytest.raises(FileNotFoundError, match=r"config 'minilm/sst3' is neither a file nor a shipped config.*"
                                                r"minilm/sst2"):
        load_config("minilm/sst3")


def test_aptune_configs_lists_every_shipped_config_with_what_it_is(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == list(configs.shipped()) and "minilm/sst2" in names and "ablations/apt_plan" in names
    sst2 = next(line for line in lines if line.startswith("minilm/sst2 "))
    assert "main job" in sst2


def test_aptune_configs_copy_writes_a_file_that_runs_from_anywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["configs", "copy", "minilm/mrpc", "mine/mrpc.yaml"]) == 0
    copied = tmp_path / "mine" / "mrpc.yaml"
    assert load_config(copied) == load_config("minilm/mrpc")  # its base: resolved to the shipped file
    assert Path(yaml.safe_load(copied.read_text())["base"]).is_absolute()
    assert main(["configs", "copy", "minilm/mrpc", str(copied)]) == 2  # never overwrites
    assert main(["configs", "copy", "minilm/nope", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert "exists; name a new file" in err and "no shipped config is named 'minilm/nope'" in err


@pytest.mark.slow
def test_the_built_wheel_installs_and_runs_a_short_main_job_outside_the_checkout(tmp_path):
    """``python -m build`` makes the wheel; a fresh virtual environment (torch and the other dependencies from
    the system, aptune only from the wheel) runs ``aptune train --config minilm/sst2`` for 20 steps in a folder
    outside the checkout."""
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
                           cwd=REPO, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("aptune-*.whl")
    env_dir = tmp_path / "env"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "APTUNE_DATA": str(SHARED_DATA), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    where = subprocess.run([str(python), "-c", "import aptune; print(aptune.__file__, aptune.__version__)"],
                           cwd=work, env=env, capture_output=True, text=True)
    assert where.returncode == 0 and str(env_dir) in where.stdout, where.stdout + where.stderr  # the wheel's copy
    listing = subprocess.run([str(env_dir / "bin" / "aptune"), "configs"], cwd=work, env=env, capture_output=True,
                             text=True)
    assert listing.returncode == 0 and "minilm/sst2 " in listing.stdout, listing.stderr
    run = subprocess.run(
        [str(env_dir / "bin" / "aptune"), "train", "--config", "minilm/sst2", "--no-latency", "output_dir=run",
         "train.steps=20", "prune.start_step=4", "prune.num_steps=2", "train.eval_every=10", "train.threads=1",
         "data.max_train_samples=640", "data.max_eval_samples=64"],
        cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert summary["density"] <= 0.4 and (work / "run" / "export" / "model.safetensors").is_file()
