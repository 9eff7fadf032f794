"""Save and restore everything a run needs to continue exactly where it stopped, in open formats.

A checkpoint folder ``checkpoints/step-<N>/`` holds:

* ``model.safetensors``: every weight of the (possibly pruned) model, plus the teacher's frozen adapter copies;
* ``structure.safetensors``: masks and surviving original indices (``StructureState``);
* ``method.safetensors``: the tensors of :meth:`aptune.APT.state_dict` (salience and adapter-importance
  EMAs, the method's generator, the distillation transform); its plain values go into ``trainer_state.json``;
* ``optimizer.safetensors`` + the optimizer part of ``trainer_state.json``: AdamW moments by parameter name;
* ``rng.safetensors``: torch's global RNG;
* ``trainer_state.json``: step, adapter ranks, LR-scheduler state, the recipe's own state (eval history ...),
  and the run's resolved config (less the keys a resume may change);
* ``manifest.json``: the SHA-256 of every file above, written last.

No pickles. Restoring rebuilds the pruned shapes from the pretrained model and the saved indices (prune to
them, grow the ranks), then loads the values, so a resumed run continues with identical tensors. A folder is
written under a unique temporary name and renamed, so a crash never leaves a half-written checkpoint; a
checkpoint whose files do not match its manifest (truncated, edited, missing) is reported by path and the
previous intact one is used (:func:`latest_intact_checkpoint`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from aptune.adapters.layer import APTLinear

SECTION = "::"  # joins a section of the method state and its own (flat) key in method.safetensors


# ------------------------------------------------------------------------------------------ names


def trainable_names(apt) -> dict[str, torch.nn.Parameter]:
    """Every tensor the optimizer may hold, by a stable name: ``model.<path>`` and ``transform.<path>``."""
    named = {f"model.{n}": p for n, p in apt.model.model.named_parameters(remove_duplicate=False)}
    if apt.transform is not None:
        named.update({f"transform.{n}": p for n, p in apt.transform.named_parameters()})
    return named


def _model_weights(model) -> dict[str, torch.Tensor]:
    tensors, seen = {}, set()
    for name, param in model.model.named_parameters(remove_duplicate=False):
        if id(param) in seen:  # tied weights are saved once
            continue
        seen.add(id(param))
        tensors[f"model.{name}"] = param.detach().cpu().contiguous()
    for path, module in model.model.named_modules():
        if isinstance(module, APTLinear) and module.teacher_A is not None:
            tensors[f"teacher.{path}.A"] = module.teacher_A.detach().cpu().contiguous()
            tensors[f"teacher.{path}.B"] = module.teacher_B.detach().cpu().contiguous()
    return tensors


# ------------------------------------------------------------------------ method state, split in two


def split_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A state dict of tensors, plain values and one level of sections -> (tensors, JSON-able rest)."""
    tensors, plain = {}, {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().contiguous()
        elif isinstance(value, dict):
            plain[key] = {k: v for k, v in value.items() if not isinstance(v, torch.Tensor)}
            tensors.update({f"{key}{SECTION}{k}": v.detach().cpu().contiguous()
                            for k, v in value.items() if isinstance(v, torch.Tensor)})
        else:
            plain[key] = value
    return tensors, plain


def join_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`split_state`."""
    state = copy.deepcopy(plain)
    for key, tensor in tensors.items():
        if SECTION in key:
            section, inner = key.split(SECTION, 1)
            state.setdefault(section, {})[inner] = tensor
        else:
            state[key] = tensor
    return state


# ------------------------------------------------------------------------------------------ saving


def _optimizer_state(apt, optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    names = {id(p): n for n, p in trainable_names(apt).items()}
    tensors, meta = {}, {"params": [], "groups": []}
    for group in optimizer.param_groups:
        meta["groups"].append({k: v for k, v in group.items() if k != "params"})
        for param in group["params"]:
            name = names[id(param)]
            meta["params"].append(name)
            for key, value in optimizer.state.get(param, {}).items():
                tensors[f"{name}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, meta


def save_checkpoint(directory: Path, step: int, apt, optimizer, lr_schedule, run_state: dict) -> Path:
    """Write ``directory/step-<step>`` atomically and return it.

    Args:
        apt: the :class:`aptune.APT` (its model, and its own state).
        run_state: the recipe's JSON-able state (eval history, best score, ...).
    """
    final = directory / f"step-{step:07d}"
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:07d}-", dir=directory))  # unique: never shared
    save_file(_model_weights(apt.model), str(tmp / "model.safetensors"))
    save_file(apt.model.state.state_dict(), str(tmp / "structure.safetensors"))
    method_tensors, method_plain = split_state(apt.state_dict())
    save_file(method_tensors, str(tmp / "method.safetensors"))
    opt_tensors, opt_meta = _optimizer_state(apt, optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    py_state = random.getstate()
    np_state = np.random.get_state()
    state = dict(run_state, step=step, ranks=apt.model.ranks(), method=method_plain, optimizer=opt_meta,
                 lr_schedule={k: v for k, v in lr_schedule.state_dict().items() if k != "lr_lambdas"},
                 python_rng=[py_state[0], list(py_state[1]), py_state[2]],
                 numpy_rng=[np_state[0], np_state[1].tolist(), *np_state[2:]])
    (tmp / "trainer_state.json").write_text(json.dumps(state))
    _write_manifest(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path) -> None:
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    (folder / "manifest.json").write_text(json.dumps({name: _sha256(folder / name) for name in files}, indent=1))


def check_checkpoint(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder (a missing or damaged file, named by path), or None if intact."""
    manifest = folder / "manifest.json"
    try:
        expected = json.loads(manifest.read_text())
    except (OSError, ValueError) as err:
        return f"{manifest}: unreadable ({err})"
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if _sha256(path) != digest:
            return f"{path} does not match its checksum in {manifest} (truncated or changed)"
    return None


def latest_intact_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint whose files match their manifest; each damaged newer one is warned about by path."""
    for folder in sorted(directory.glob("step-*"), reverse=True) if directory.exists() else []:
        problem = check_checkpoint(folder)
        if problem is None:
            return folder
        warnings.warn(f"skipping damaged checkpoint {folder}: {problem}", stacklevel=2)
    return None


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs (nested dicts), with both values."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


# ----------------------------------------------------------------------------------------- restoring


def restore_model(model, folder: Path) -> dict:
    """Bring a freshly wrapped :class:`APTModel` to the checkpoint's shapes and values; returns the saved
    trainer state (``trainer_state.json``)."""
    state = json.loads((folder / "trainer_state.json").read_text())
    saved = load_file(str(folder / "structure.safetensors"))
    current = model.state
    heads = {n: torch.isin(current.head_index[n], saved[f"head_index/{n}"]).float() for n in current.heads}
    ffn = {n: torch.isin(current.ffn_index[n], saved[f"ffn_index/{n}"]).float() for n in current.ffn}
    hidden = torch.isin(current.hidden_index, saved["hidden_index"]).float()
    current.set_masks(heads=heads, ffn=ffn, hidden=hidden)
    model.prune()
    current.load_state_dict(saved)
    adapters = {path: m for path, m in model.model.named_modules() if isinstance(m, APTLinear)}
    for path, rank in state["ranks"].items():
        adapters[path].grow_rank(rank)
    weights = load_file(str(folder / "model.safetensors"))
    with torch.no_grad():
        for name, param in model.model.named_parameters(remove_duplicate=False):
            if f"model.{name}" in weights:
                param.copy_(weights[f"model.{name}"])
    for key, value in weights.items():
        if key.startswith("teacher."):
            path, which = key[len("teacher."):].rsplit(".", 1)
            setattr(adapters[path], f"teacher_{which}", value.to(adapters[path].lora_A.device, copy=True))
    model.set_trainable()
    return state


def restore_method(apt, folder: Path, state: dict) -> None:
    """Load the method's state (after :func:`restore_model`)."""
    apt.load_state_dict(join_state(load_file(str(folder / "method.safetensors")), state["method"]))


def restore_loop(folder: Path, state: dict, apt, optimizer, lr_schedule) -> None:
    """Load optimizer, LR-scheduler and RNG states into objects built for the restored model and method."""
    named = trainable_names(apt)
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
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch"])
    py = state["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy_rng"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
