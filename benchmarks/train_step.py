"""Training-step time and peak memory of MiniLM under aptune (dense and pruned), PEFT LoRA and full fine-tuning.

Variants (all on the real MiniLM, sequence classification, 2 labels):

* ``aptune@1.0``: ``APTModel`` with APT adapters of rank 8 on the family defaults (q, v, FFN up), all masks 1;
* ``aptune@0.4``: the same model pruned in one shot (weight magnitude, keep-set search) to 40% of the prunable
  parameters and physically cut (``apt.prune()``), adapters kept;
* ``peft-lora``: PEFT LoRA, r 8, alpha 16, dropout 0, on query, value and intermediate.dense (SEQ_CLS);
* ``full-ft``: the stock model with every weight trainable.

A step is forward + backward + AdamW step (+ zero_grad) on one batch of random token ids (no padding) and random
labels; every variant sees the same batches, in train mode.

Timing: ``--warmup`` untimed steps per variant, then ``--steps`` timed steps per variant, interleaved
round-robin (A, B, C, D, A, B, ...) so machine noise hits all variants alike; median and p90 in s/step.
On CUDA each step is bracketed by ``torch.cuda.synchronize``.

Memory: each variant runs in its own subprocess (this script with ``--variant X --memory-only``) that builds
the variant, runs ``--memory-steps`` steps (the first one allocates the AdamW moments), and reports
  * on CPU: the absolute peak RSS of the process (``ru_maxrss``, includes imports and model loading), and the
    training peak = peak RSS during the steps minus the RSS just before them (model loaded, built and, for
    aptune@0.4, pruned). The peak is reset before the steps through ``/proc/self/clear_refs`` (Linux; then
    read from VmHWM); where that is impossible the training peak falls back to ``ru_maxrss`` and may hide
    under the loading peak (the JSON says which method was used);
  * on CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, absolute and minus the
    memory allocated just before the steps.

    python benchmarks/train_step.py [--steps 10] [--warmup 2] [--batch-size 32] [--seq-len 64] [--threads N]
                                    [--device cpu|cuda] [--variants aptune@1.0,aptune@0.4,peft-lora,full-ft]
                                    [--json OUT]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

VARIANTS = ("aptune@1.0", "aptune@0.4", "peft-lora", "full-ft")
GOALS = {"aptune@1.0 / peft-lora": 1.15, "aptune@0.4 / aptune@1.0": 0.6}
MEMORY_TAG = "MEMORY_JSON "


# ------------------------------------------------------------------------------------------- building


def _quiet_transformers() -> None:
    import warnings

    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices from transformers / peft

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_minilm():
    from aptune.models import load_model

    return load_model("minilm", head="sequence-classification", num_labels=2)


def build_variant(name: str, model, density: float = 0.4, rank: int = 8, seed: int = 0,
                  round_to: int = 8) -> torch.nn.Module:
    """The training-ready module of variant ``name`` built from the freshly loaded ``model`` (on CPU)."""
    torch.manual_seed(seed)
    if name in ("aptune@1.0", "aptune@0.4"):
        from aptune.model import AdapterConfig, APTModel

        apt = APTModel(model, AdapterConfig(rank=rank), seed=seed)
        if name == "aptune@0.4":
            from aptune.salience import build_scorer
            from aptune.search import search_keep_set

            scorer = build_scorer("magnitude").attach(apt)
            scorer.update()
            keep = search_keep_set(scorer.scores(), apt.state, apt.counter, int(density * apt.original_params),
                                   round_to=round_to)
            apt.state.set_masks(heads=keep.heads, ffn=keep.ffn, hidden=keep.hidden)
            apt.prune()
            apt._bench_density = apt.num_params() / apt.original_params
            detach = getattr(scorer, "detach", None)
            if callable(detach):  # a scorer's hooks must not stay in the timed forward
                detach()
        return apt
    if name == "peft-lora":
        from peft import LoraConfig, TaskType, get_peft_model

        config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, task_type=TaskType.SEQ_CLS,
                            target_modules=["query", "value", "intermediate.dense"])
        return get_peft_model(model, config)
    if name == "full-ft":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")


def make_batches(vocab_size: int, count: int, batch_size: int, seq_len: int, device, seed: int = 0) -> list[dict]:
    """``count`` batches of random token ids (never special/pad ids), full attention, random binary labels."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(1000, vocab_size, (batch_size, seq_len), generator=generator)
        labels = torch.randint(0, 2, (batch_size,), generator=generator)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
        batches.append({k: v.to(device) for k, v in batch.items()})
    return batches


class Runner:
    """One variant on its device with its AdamW optimizer; ``step`` = forward + backward + optimizer step."""

    def __init__(self, name: str, module: torch.nn.Module, device: torch.device, lr: float = 1e-4):
        self.name = name
        self.module = module.to(device).train()
        self.device = device
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.total = sum(p.numel() for p in self.module.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=lr)
        self.times: list[float] = []

    def step(self, batch: dict) -> float:
        _sync(self.device)
        start = time.perf_counter()
        loss = self.module(**batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


# --------------------------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc), so the pre-step RSS is not inflated by freed loading buffers."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs); True if it worked."""
    before = _status_kib("VmHWM")
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    after, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    return before is not None and after is not None and rss is not None and after <= max(rss, 1) + 1024


def memory_only(args: argparse.Namespace) -> None:
    """Build one variant, run a few steps, print one ``MEMORY_JSON`` line."""
    device = torch.device(args.device)
    _quiet_transformers()
    model = load_minilm()
    vocab = model.config.vocab_size
    rss_after_load = _status_kib("VmRSS")
    runner = Runner(args.variant, build_variant(args.variant, model, args.density, args.rank, args.seed, args.round_to), device,
                    args.lr)
    batches = make_batches(vocab, args.memory_steps, args.batch_size, args.seq_len, device, args.seed)
    _trim_heap()
    out: dict = {"variant": args.variant, "device": str(device), "steps": args.memory_steps,
                 "rss_after_load_bytes": rss_after_load * 1024 if rss_after_load else None}
    rss_before = _status_kib("VmRSS")
    out["rss_before_steps_bytes"] = rss_before * 1024 if rss_before else None
    hwm_setup = _status_kib("VmHWM")  # this process's own peak so far (imports, loading, building, pruning)
    out["peak_rss_setup_bytes"] = hwm_setup * 1024 if hwm_setup else None
    reset = _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        allocated_before = torch.cuda.memory_allocated(device)
    for batch in batches:
        runner.step(batch)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        out.update(method="cuda.max_memory_allocated", peak_bytes=peak, allocated_before_steps_bytes=allocated_before,
                   training_peak_bytes=peak - allocated_before)
    hwm = _status_kib("VmHWM")
    # ru_maxrss (KiB on Linux) is kept across execve, so in a child it can report the *parent's* peak;
    # VmHWM belongs to this process image only, hence the absolute peak below uses VmHWM where it exists.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["ru_maxrss_bytes"] = maxrss
    if device.type != "cuda":
        if reset and hwm is not None and hwm_setup is not None:
            out.update(method="VmHWM reset via /proc/self/clear_refs before the steps",
                       peak_bytes=max(hwm_setup, hwm) * 1024, peak_rss_steps_bytes=hwm * 1024,
                       training_peak_bytes=hwm * 1024 - out["rss_before_steps_bytes"])
        else:
            out.update(method="ru_maxrss (peak not resettable: may include loading or the parent's peak)",
                       peak_bytes=maxrss, peak_rss_steps_bytes=maxrss,
                       training_peak_bytes=maxrss - out["rss_before_steps_bytes"])
    print(MEMORY_TAG + json.dumps(out), flush=True)


def measure_memory_subprocess(variant: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--memory-only", "--variant", variant,
               "--device", args.device, "--threads", str(args.threads), "--batch-size", str(args.batch_size),
               "--seq-len", str(args.seq_len), "--memory-steps", str(args.memory_steps), "--rank", str(args.rank),
               "--density", str(args.density), "--round-to", str(args.round_to), "--seed", str(args.seed), "--lr", str(args.lr)]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(MEMORY_TAG):
            return json.loads(line[len(MEMORY_TAG):])
    sys.stderr.write(done.stdout + done.stderr)
    raise RuntimeError(f"memory subprocess for {variant} failed (exit {done.returncode})")


# ------------------------------------------------------------------------------------------------ main


def versions(device: torch.device) -> dict:
    import peft
    import transformers

    import aptune

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "aptune": getattr(aptune, "__version__", "?"),
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (interleaved)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    parser.add_argument("--rank", type=int, default=8, help="adapter / LoRA rank (LoRA alpha = 2 x rank)")
    parser.add_argument("--density", type=float, default=0.4, help="kept fraction of prunable params for aptune@0.4")
    parser.add_argument("--round-to", type=int, default=8,
                        help="kept FFN widths / hidden size rounded down to a multiple of this (1 = exact budget)")
    parser.add_argument("--memory-steps", type=int, default=3, help="steps per memory subprocess")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--num-batches", type=int, default=4, help="distinct batches, cycled")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write every number to this JSON file")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if args.memory_only:
        memory_only(args)
        return 0

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    device = torch.device(args.device)
    _quiet_transformers()
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    info = versions(device)
    print(f"# Training-step benchmark: MiniLM, batch {args.batch_size}, seq {args.seq_len}, device {device}")
    print(f"command: `{command}`  ")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info.items()) + "  ")
    print(f"protocol: {args.warmup} warm-up + {args.steps} timed steps per variant, interleaved round-robin; "
          f"step = forward + backward + AdamW step; same {args.num_batches} random-token batches for all variants  ")

    # memory first: subprocesses started while this process is still small
    memory: dict[str, dict] = {}
    if not args.no_memory:
        for name in names:
            memory[name] = measure_memory_subprocess(name, args)

    runners: dict[str, Runner] = {}
    notes: dict[str, str] = {}
    vocab = None
    for name in names:
        model = load_minilm()
        vocab = model.config.vocab_size
        module = build_variant(name, model, args.density, args.rank, args.seed, args.round_to)
        if name == "aptune@0.4":
            notes[name] = f"prunable-parameter density {module._bench_density:.3f}"
        runners[name] = Runner(name, module, device, args.lr)
        del module, model
    batches = make_batches(vocab, args.num_batches, args.batch_size, args.seq_len, device, args.seed)

    for i in range(args.warmup):
        for runner in runners.values():
            runner.step(batches[i % len(batches)])
    for i in range(args.steps):
        batch = batches[i % len(batches)]
        for runner in runners.values():
            runner.times.append(runner.step(batch))

    results = {}
    for name, runner in runners.items():
        results[name] = {"trainable_params": runner.trainable, "total_params": runner.total,
                         "median_s": statistics.median(runner.times), "p90_s": _p90(runner.times),
                         "times_s": runner.times, "memory": memory.get(name), "note": notes.get(name)}
    ref = results.get("peft-lora", {}).get("median_s")

    mem_kind = "GPU max allocated" if device.type == "cuda" else "RSS"
    print()
    print(f"| variant | trainable params | all params | median s/step | p90 s/step | ratio to PEFT LoRA | "
          f"training peak {mem_kind} (MiB, over pre-step) | absolute peak {mem_kind} (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        m = r["memory"] or {}
        ratio = f"{r['median_s'] / ref:.2f}" if ref else "n/a"
        print(f"| {name} | {r['trainable_params']:,} | {r['total_params']:,} | {r['median_s']:.3f} | "
              f"{r['p90_s']:.3f} | {ratio} | {_mib(m.get('training_peak_bytes'))} | {_mib(m.get('peak_bytes'))} |")
    print()
    for name, note in notes.items():
        print(f"{name}: {note}  ")
    if memory:
        method = next(iter(memory.values())).get("method")
        print(f"memory: one subprocess per variant, {args.memory_steps} steps, method: {method}  ")

    goals = {}
    for label, limit in GOALS.items():
        num, den = (s.strip() for s in label.split("/"))
        if num in results and den in results:
            value = results[num]["median_s"] / results[den]["median_s"]
            goals[label] = {"value": value, "goal": limit, "met": value <= limit}
            print(f"goal {label} step time: {value:.3f} (goal <= {limit}) -> {'MET' if value <= limit else 'NOT met'}  ")

    if args.json:
        payload = {"command": command, "versions": info, "args": {k: v for k, v in vars(args).items()
                                                                   if k not in ("memory_only", "variant")},
                   "results": results, "goals": goals}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
