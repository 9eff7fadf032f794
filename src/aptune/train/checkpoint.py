"""Save and restore everything a run needs to continue exactly where it stopped, in open formats.

A checkpoint folder ``checkpoints/step-<N>/`` holds:

* ``model.safetensors``: every weight of the (possibly pruned) model and the distillation transform,
  plus the teacher's frozen adapter copies;
* ``structure.safetensors``: masks and surviving original indices (``StructureState``);
* ``salience.safetensors``: the block-salience EMA and the adapter-importance EMA;
* ``optimizer.safetensors`` + the optimizer part of ``trainer_state.json``: AdamW moments by parameter name;
* ``rng.safetensors``: torch's global RNG and the run's generator;
* ``trainer_state.json``: step, adapter ranks, LR-scheduler state, best score, eval history, flags.

No pickles. Restoring rebuilds the pruned shapes from the pretrained model and the saved indices (prune to
them, grow the ranks), then loads the values, so a resumed run continues with identical tensors. A folder
is written under a temporary name and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from aptune.adapters.layer import APTLinear


def _named_params(apt, transform) -> dict[str, torch.nn.Parameter]:
    named = {f"model.{n}": p for n, p in apt.model.named_parameters(remove_duplicate=False)}
    if transform is not None:
        named.update({f"transform.{n}": p for n, p in transform.named_parameters()})
    return named


def _weights(apt, transform) -> dict[str, torch.Tensor]:
    tensors = {}
    seen: dict[int, str] = {}
    for name, param in _named_params(apt, transform).items():
        if id(param) in seen:  # tied weights are saved once
            continue
        seen[id(param)] = name
        tensors[name] = param.detach().cpu().contiguous()
    for path, module in apt.model.named_modules():
        if isinstance(module, APTLinear) and module.teacher_A is not None:
            tensors[f"teacher.{path}.A"] = module.teacher_A.detach().cpu().contiguous()
            tensors[f"teacher.{path}.B"] = module.teacher_B.detach().cpu().contiguous()
    return tensors


def save_checkpoint(directory: Path, step: int, apt, transform, optimizer, lr_schedule, scorer, importance,
                    generator: torch.Generator, trainer_state: dict) -> Path:
    """Write ``directory/step-<step>`` atomically and return it."""
    final = directory / f"step-{step:07d}"
    tmp = directory / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_weights(apt, transform), str(tmp / "model.safetensors"))
    save_file(apt.state.state_dict(), str(tmp / "structure.safetensors"))
    salience = {f"structure/{k}": v for k, v in scorer.state_dict().items()}
    salience.update({f"adapter/{k}": v.detach().cpu() for k, v in importance.state_dict().items()})
    save_file(salience, str(tmp / "salience.safetensors"))
    names = {id(p): n for n, p in _named_params(apt, transform).items()}
    opt_tensors, opt_meta = {}, {"params": [], "groups": []}
    for group in optimizer.param_groups:
        opt_meta["groups"].append({k: v for k, v in group.items() if k != "params"})
        for param in group["params"]:
            name = names[id(param)]
            opt_meta["params"].append(name)
            for key, value in optimizer.state.get(param, {}).items():
                opt_tensors[f"{name}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file({"torch": torch.get_rng_state(), "generator": generator.get_state()}, str(tmp / "rng.safetensors"))
    py_state = random.getstate()
    np_state = np.random.get_state()
    state = dict(trainer_state, step=step, ranks=apt.ranks(), optimizer=opt_meta,
                 lr_schedule={k: v for k, v in lr_schedule.state_dict().items() if k != "lr_lambdas"},
                 transform_rank=transform.linear.rank if transform is not None else None,
                 python_rng=[py_state[0], list(py_state[1]), py_state[2]],
                 numpy_rng=[np_state[0], np_state[1].tolist(), *np_state[2:]])
    (tmp / "trainer_state.json").write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(directory.glob("step-*")) if directory.exists() else []
    return found[-1] if found else None


def restore_structure(apt, transform, folder: Path) -> dict:
    """Bring a freshly wrapped model to the checkpoint's shapes and values; returns the trainer state."""
    state = json.loads((folder / "trainer_state.json").read_text())
    saved = load_file(str(folder / "structure.safetensors"))
    current = apt.state
    heads = {n: torch.isin(current.head_index[n], saved[f"head_index/{n}"]).float() for n in current.heads}
    ffn = {n: torch.isin(current.ffn_index[n], saved[f"ffn_index/{n}"]).float() for n in current.ffn}
    hidden = torch.isin(current.hidden_index, saved["hidden_index"]).float()
    current.set_masks(heads=heads, ffn=ffn, hidden=hidden)
    apt.prune()
    current.load_state_dict(saved)
    adapters = {path: m for path, m in apt.model.named_modules() if isinstance(m, APTLinear)}
    for path, rank in state["ranks"].items():
        adapters[path].grow_rank(rank)
    if transform is not None:
        transform.sync()
        transform.linear.grow_rank(state["transform_rank"])
    weights = load_file(str(folder / "model.safetensors"))
    named = _named_params(apt, transform)
    with torch.no_grad():
        for name, param in named.items():
            if name in weights:
                param.copy_(weights[name])
    for key, value in weights.items():
        if key.startswith("teacher."):
            path, which = key[len("teacher."):].rsplit(".", 1)
            setattr(adapters[path], f"teacher_{which}", value.clone())
    apt.set_trainable()
    return state


def restore_training(folder: Path, state: dict, apt, transform, optimizer, lr_schedule, scorer, importance,
                     generator: torch.Generator) -> None:
    """Load optimizer, scheduler, salience and RNG states into objects built for the restored model."""
    named = _named_params(apt, transform)
    tensors = load_file(str(folder / "optimizer.safetensors"))
    params = [named[name] for name in state["optimizer"]["params"]]
    optimizer.param_groups[0]["params"] = params
    for key, value in state["optimizer"]["groups"][0].items():
        optimizer.param_groups[0][key] = value
    optimizer.state.clear()
    for name, param in zip(state["optimizer"]["params"], params):
        entries = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.split("/", 1)[0] == name}
        if entries:
            optimizer.state[param] = {k: v.clone() for k, v in entries.items()}
    lr_schedule.load_state_dict(dict(state["lr_schedule"], lr_lambdas=[None] * len(optimizer.param_groups)))
    salience = load_file(str(folder / "salience.safetensors"))
    scorer.load_state_dict({k[len("structure/"):]: v for k, v in salience.items() if k.startswith("structure/")})
    importance.load_state_dict({k[len("adapter/"):]: v for k, v in salience.items() if k.startswith("adapter/")})
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["generator"])
    py = state["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy_rng"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
