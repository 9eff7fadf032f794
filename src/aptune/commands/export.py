"""``aptune export CHECKPOINT --output DIR``: export a checkpoint of ``aptune train`` as a merged, physically
smaller Hugging Face model (what a finished run writes to ``<output_dir>/export``).

A run stopped early (killed, out of time) leaves its checkpoints; this turns one of them into the same kind
of export. CHECKPOINT is a checkpoint folder (``runs/x/checkpoints/step-0000400``) or a run folder (its
latest checkpoint). The run's ``config.yaml`` says which model to rebuild.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "export"
HELP = "export a checkpoint of `aptune train` as a merged, physically smaller Hugging Face model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path,
                        help="a checkpoint folder (runs/x/checkpoints/step-N) or a run folder (its latest checkpoint)")
    parser.add_argument("--output", type=Path, required=True, help="export folder")


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


def run(args: argparse.Namespace) -> int:
    from aptune.config import load_config
    from aptune.models import load_tokenizer
    from aptune.train.checkpoint import restore_model
    from aptune.train.recipe import build_model, export_dtype

    folder = find_checkpoint(args.checkpoint)
    run_dir = folder.parent.parent
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir / 'config.yaml'} not found: a checkpoint lives in <run>/checkpoints/, "
                                "beside the run's config.yaml")
    config = load_config(run_dir / "config.yaml")
    state = json.loads((folder / "trainer_state.json").read_text())
    model = build_model(config, state.get("num_labels"), state.get("label_names", []))
    restore_model(model, folder)
    if not model.state.is_binary():
        raise ValueError(f"{folder} was saved while the masks were moving toward a pruning step (soft values); "
                         "export a checkpoint taken outside a mask-decay window, or the finished run's export")
    out = model.export(args.output, tokenizer=load_tokenizer(config.model.name),
                       card={"base_model": config.model.name, "task": config.data.task, "config": config.to_dict(),
                             "command": f"aptune export {args.checkpoint} --output {args.output}"},
                       dtype=export_dtype(config))
    print(f"exported {folder} (step {state['step']}, density {model.num_params() / model.original_params:.3f}) "
          f"to {out}")
    return 0
