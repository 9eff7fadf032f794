"""The report of a decoder comparison plan (``configs/smollm2/compare.yaml``): quality and cost of each export.

    from aptune.ablation.compare_report import is_comparison, write_comparison_report
    write_comparison_report("runs/ablations/compare-cpu", out_dir="results/llama")

``aptune report`` picks this report when the runs were evaluated downstream (``evaluation`` in the plan: the
result JSONs carry ``eval_info.downstream``). It writes ``report.md`` (protocol, a quality table, a cost
table, the share of ``lora``'s average multiple-choice score each run keeps, greedy answers side by side),
``score_vs_latency.png`` and ``runs.csv``.

A run that builds on earlier runs is charged for them: one that starts from another's export (``init_from``,
e.g. ``lora_prune`` after ``lora``, the same seed) or distils from it (``teacher_from``, that run's seed) adds
their tuning steps and training time to its own, and its peak training memory is the highest of them all.

Runs with several seeds are shown as the mean over their seeds with the half-width of its 95% t-interval, and
each run that shares two seeds or more with ``lora`` is compared with it seed by seed (``## Against lora, paired
by seed``): the held-out loss, the average score, and the shares of lora's score and of its margin over chance.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

from aptune.ablation.paths import portable, runs_folders, shown_folder
from aptune.ablation.plan import builds_on
from aptune.ablation.plots import pyplot
from aptune.ablation.results import failed, finished, load_results, provenance, report_folder
from aptune.ablation.stats import Stat, interval_side
from aptune.ablation.tables import failed_runs_table, table

REFERENCE = "lora"  # the denominator of "share of lora's average score"
PAPER_SHARE = {"apt": 0.864}  # APT paper, LLaMA-2-7B at 70% density: 86.4% of LoRA's average (docs/method.md §I)
TASK_NAMES = {"arc_easy": "ARC-E", "arc_challenge": "ARC-C", "sciq": "SciQ", "mmlu": "MMLU"}


def is_comparison(results: list[dict]) -> bool:
    """True when the runs were evaluated downstream (the plan had an ``evaluation`` section)."""
    return any((r.get("eval_info") or {}).get("downstream") for r in results)


# ------------------------------------------------------------------------------------------ per-run numbers
def by_variant(results: list[dict]) -> dict[str, dict[int, dict]]:
    """Run name -> seed -> result, runs in the plan's order, seeds ascending."""
    runs: dict[str, dict[int, dict]] = {}
    for result in sorted(results, key=lambda r: (r["run_info"].get("plan_index", 0), r["run_info"]["seed"])):
        runs.setdefault(result["run_info"]["variant"], {})[result["run_info"]["seed"]] = result
    return runs


def _earlier_runs(result: dict, runs: dict[str, dict[int, dict]]) -> list[dict]:
    """The finished runs ``result`` builds on, each once, and the runs those build on: its ``init_from`` run (the
    same seed) and its ``teacher_from`` run (the seed it names, else the same). A run absent from the folder is
    not charged."""
    found: dict[str, dict] = {}
    todo = [result]
    while todo:
        info = todo.pop()["run_info"]
        for _, name, seed in builds_on(info.get("init_from"), info.get("teacher_from"), info["seed"]):
            earlier = runs.get(name, {}).get(seed)
            if earlier is not None and earlier["run_info"]["name"] not in found:
                found[earlier["run_info"]["name"]] = earlier
                todo.append(earlier)
    return list(found.values())


def run_row(result: dict, runs: dict[str, dict[int, dict]]) -> dict:
    """Every number of one run the report shows (None where not measured); ``runs``: name -> seed -> result."""
    info, train, inf, ev = result["run_info"], result["train_info"], result["inference_info"], result["eval_info"]
    charged = [result, *_earlier_runs(result, runs)]
    step_times = [s["step_time"] for s in train["steps"] if s.get("step_time") is not None]
    row = {
        "run": info["variant"], "role": info["role"], "what": info["what"], "init_from": info.get("init_from"),
        "charged_for": " ".join(r["run_info"]["name"] for r in charged[1:]),  # text, one CSV cell
        "density": train["density"], "params": inf["params"],
        "tuning_steps": sum(r["run_info"]["config"]["train"]["steps"] for r in charged),
        "heldout_loss": ev["final"]["eval_loss"], "perplexity": ev["final"]["perplexity"],
        "n_heldout": ev["final"].get("n"),
        "s_per_step": statistics.median(step_times) if step_times else None,
        "train_time_s": sum(r["train_info"]["train_time_s"] for r in charged),
        # the whole `aptune train` process: loading, the calibration batches of a cut before tuning, export
        "process_time_s": sum(r["train_info"]["process_time_s"] for r in charged),
        "peak_train_rss": max(r["train_info"]["peak_rss_bytes"] for r in charged),
    }
    for task in ev["downstream"]:
        key = task["task"]
        row[f"{key}_acc"], row[f"{key}_acc_norm"], row[f"{key}_n"] = task["acc"], task["acc_norm"], task["n"]
        row[f"{key}_stderr"] = task.get("acc_stderr")
    tasks = [t["task"] for t in ev["downstream"]]
    row["avg_acc"] = statistics.fmean(row[f"{t}_acc"] for t in tasks)
    row["avg_acc_norm"] = statistics.fmean(row[f"{t}_acc_norm"] for t in tasks)
    row["avg_chance"] = statistics.fmean(task["chance"] for task in ev["downstream"])
    # the standard error of a mean of independent task scores: sqrt(sum se^2) / k
    errors = [row[f"{t}_stderr"] for t in tasks]
    row["avg_acc_stderr"] = (math.sqrt(sum(e * e for e in errors)) / len(errors)
                             if all(e is not None for e in errors) else None)
    batch = next(iter(inf["by_batch"].values()))
    row.update(prefill_batch=batch["batch_size"], prefill_seq=inf["seq_len"], prefill_s=batch["median_s"],
               prefill_memory=batch["peak_memory_bytes"], weights_bytes=inf["weights_bytes"],
               disk_bytes=inf["disk_weights_bytes"])
    gen = inf.get("generation") or {}
    row.update(decode_tokens_per_s=gen.get("tokens_per_s"), decode_memory=gen.get("peak_memory_bytes"))
    return row


def mean_row(rows_by_seed: dict[int, dict]) -> dict:
    """One run over its seeds: each number the mean over the seeds (kept as it is where every seed has the same
    value), with the half-width of its 95% t-interval in ``row["half_width"]``; text from the first seed."""
    rows = list(rows_by_seed.values())
    row = dict(rows[0], seeds=sorted(rows_by_seed), half_width={})
    for key, value in rows[0].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        values = [r.get(key) for r in rows]
        if any(v is None for v in values) or len(set(values)) == 1:
            row[key] = None if any(v is None for v in values) else value
            continue
        stat = Stat.of(values)
        row[key], row["half_width"][key] = stat.mean, stat.half_width
    return row


def shares(rows: dict[str, dict], key: str) -> dict[str, float | None]:
    """Each run's ``key`` (an average score) as a share of ``lora``'s."""
    reference = rows.get(REFERENCE, {}).get(key)
    return {name: (row[key] / reference if reference else None) for name, row in rows.items()}


# ------------------------------------------------------------------------------------------ formatting
def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _answer_cell(text: str, limit: int = 220) -> str:
    text = " ".join(text.split())  # one line in a table cell
    return (text[:limit] + " …") if len(text) > limit else (text or "*(empty)*")


# ------------------------------------------------------------------------------------------ the report
def plot_score_vs_latency(rows: dict[str, dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    # runs close together (the dense ones) get their labels above and below the point in turn
    for i, (name, row) in enumerate(sorted(rows.items(), key=lambda item: item[1]["prefill_s"])):
        x, y = row["prefill_s"] * 1e3, 100 * row["avg_acc"]
        spread = row["half_width"].get("avg_acc") if len(row["seeds"]) > 1 else row["avg_acc_stderr"]
        err = 100 * spread if spread else None
        ax.errorbar([x], [y], yerr=[err] if err else None, fmt="o", capsize=3,
                    color="C3" if row["role"] == "method" else "C0" if row["role"] == "reference" else "C2")
        ax.annotate(f"{name} ({row['density']:.2f})", (x, y), textcoords="offset points",
                    xytext=(6, 4 if i % 2 == 0 else -12), fontsize=8)
    any_row = next(iter(rows.values()))
    ax.set_xlabel(f"prefill latency, batch {any_row['prefill_batch']} x {any_row['prefill_seq']} tokens (ms, CPU)")
    ax.set_ylabel("average zero-shot multiple-choice acc (%)")
    ax.set_title("score against latency (label: run, density); bars: 95% interval over seeds, or ±1 standard "
                 "error of one seed", fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.2)  # room for the labels of the outermost points
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_comparison_report(runs_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.md``, ``score_vs_latency.png`` and ``runs.csv``; return the report's path."""
    runs_dir = Path(runs_dir)
    out = report_folder(runs_dir, out_dir)
    all_results = sorted(load_results(runs_dir), key=lambda r: r["run_info"].get("plan_index", 0))
    failed_runs = failed(all_results)
    runs = by_variant(finished(all_results))
    # one row per run and seed (a run is charged for the earlier runs it builds on), then one per run
    seed_rows = {name: {seed: run_row(result, runs) for seed, result in by_seed.items()}
                 for name, by_seed in runs.items()}
    rows = {name: mean_row(by_seed) for name, by_seed in seed_rows.items()}
    first = next(iter(next(iter(runs.values())).values())) if runs else None
    tasks = [t["task"] for t in first["eval_info"]["downstream"]] if first else []

    lines = [f"# Comparison report: `{shown_folder(runs_dir)}`", "", *provenance(all_results, len(failed_runs)), ""]
    if runs:
        seeds = sorted({seed for by_seed in runs.values() for seed in by_seed})
        lines += _protocol(first, tasks, seeds)
        lines += _quality_section(rows, tasks) + _paired_section(seed_rows) + _cost_section(rows)
        plot_score_vs_latency(rows, out / "score_vs_latency.png")
        lines += ["![average multiple-choice acc against prefill latency](score_vs_latency.png)", ""]
        first_seed = of_seed_first(runs)
        lines += _generations(first_seed) + _runs_section(first_seed, runs_dir)
    if failed_runs:
        lines += failed_runs_table(failed_runs)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    _write_csv(out / "runs.csv", [dict(row, seed=seed) for by_seed in seed_rows.values()
                                  for seed, row in by_seed.items()])
    return report


def of_seed_first(runs: dict[str, dict[int, dict]]) -> dict[str, dict]:
    """Run name -> the result of its first seed (greedy answers and commands are shown for one seed)."""
    return {name: by_seed[min(by_seed)] for name, by_seed in runs.items()}


def _quality_section(rows: dict[str, dict], tasks: list[str]) -> list[str]:
    """``## Quality``: held-out loss and multiple-choice scores per run, then each run's share of lora's."""
    acc_share, norm_share = shares(rows, "avg_acc"), shares(rows, "avg_acc_norm")
    header = ["run", "seeds", "density", "tuning steps", "held-out loss", "perplexity",
              *[f"{TASK_NAMES.get(t, t)} acc / acc_norm" for t in tasks], "avg acc", "avg acc_norm",
              f"share of {REFERENCE} (acc / acc_norm)"]
    cells = [[f"`{name}`", ", ".join(map(str, row["seeds"])), f"{row['density']:.3f}", f"{row['tuning_steps']:g}",
              _pm(row, "heldout_loss"), _pm(row, "perplexity", 2),
              *[f"{_pm(row, f'{t}_acc')} / {_pm(row, f'{t}_acc_norm')}" for t in tasks], _avg_cell(row),
              _pm(row, "avg_acc_norm"), f"{_pct(acc_share[name])} / {_pct(norm_share[name])}"]
             for name, row in rows.items()]
    note = (["A run with several seeds shows the mean over its seeds ± the half-width of the 95% t-interval "
             "(t(0.975, n−1)·sd/√n); a run with one seed shows its value, and its avg acc the standard error of "
             "that one average. Shares are of the means.", ""] if _several_seeds(rows) else [])
    return ["## Quality", "", *note, *table(header, cells), "", *_shares_reading(rows, acc_share, norm_share), ""]


def _several_seeds(rows: dict[str, dict]) -> bool:
    return any(len(row["seeds"]) > 1 for row in rows.values())


def _pm(row: dict, key: str, digits: int = 3) -> str:
    """``2.431 ± 0.310`` (mean ± 95% half-width over seeds), the value alone for one seed, ``n/a`` if missing."""
    value = row.get(key)
    if value is None:
        return "n/a"
    half_width = row["half_width"].get(key)
    return f"{value:.{digits}f}" + (f" ± {half_width:.{digits}f}" if half_width is not None else "")


def _avg_cell(row: dict) -> str:
    """The average score in bold, ± its interval over seeds, or over one seed its standard error."""
    if len(row["seeds"]) > 1:
        return f"**{row['avg_acc']:.3f}** ± {_num(row['half_width'].get('avg_acc'))}"
    return f"**{row['avg_acc']:.3f}** ± {_num(row['avg_acc_stderr'])} (se)"


def _paired_section(seed_rows: dict[str, dict[int, dict]]) -> list[str]:
    """``## Against lora, paired by seed``: each run minus lora on the seeds both have, with 95% intervals."""
    reference = seed_rows.get(REFERENCE, {})
    compared = {name: sorted(set(by_seed) & set(reference)) for name, by_seed in seed_rows.items()
                if name != REFERENCE}
    compared = {name: seeds for name, seeds in compared.items() if len(seeds) > 1}
    if not compared:
        return []
    header = ["run", "pairs", "held-out loss − lora's", "avg acc − lora's (points)", "share of lora's avg acc",
              "share of lora's margin over chance"]
    cells = []
    for name, seeds in compared.items():
        pairs = [(seed_rows[name][seed], reference[seed]) for seed in seeds]
        loss = Stat.of([row["heldout_loss"] - ref["heldout_loss"] for row, ref in pairs])
        acc = Stat.of([100 * (row["avg_acc"] - ref["avg_acc"]) for row, ref in pairs])
        share = Stat.of([row["avg_acc"] / ref["avg_acc"] for row, ref in pairs])
        margin = Stat.of([(row["avg_acc"] - row["avg_chance"]) / (ref["avg_acc"] - ref["avg_chance"])
                          for row, ref in pairs if ref["avg_acc"] > ref["avg_chance"]])
        cells.append([f"`{name}`", str(len(seeds)), _change(loss, 3, lower_is_better=True),
                      _change(acc, 1, lower_is_better=False), share.as_percent(), margin.as_percent()])
    return ["## Against lora, paired by seed", "",
            f"Each run minus `{REFERENCE}` on the same seed (same data order and held-out split), mean over the "
            "pairs ± the half-width of its 95% t-interval; the words follow the interval: an effect only when the "
            "whole interval lies on one side of zero. Shares are per seed, then averaged.", "",
            *table(header, cells), ""]


def _change(stat: Stat, digits: int, lower_is_better: bool) -> str:
    text = f"{stat.mean:+.{digits}f} ± {stat.half_width:.{digits}f}"
    side = interval_side(stat)
    if not side:
        return f"{text}: no difference detectable"
    return f"{text}: {'better' if (side < 0) == lower_is_better else 'worse'}"


def _cost_section(rows: dict[str, dict]) -> list[str]:
    """``## Cost``: training and inference cost per run, then each run against lora (the dense model)."""
    header = ["run", "params (export)", "s / step", "training time (loop / process)", "peak training memory",
              "prefill latency", "decoding", "inference memory (prefill / decoding)", "weights on disk"]
    cells = [[f"`{name}`", f"{row['params']:,.0f}", _num(row["s_per_step"], 2),
              f"{row['train_time_s'] / 60:.1f} / {row['process_time_s'] / 60:.1f} min", _mib(row["peak_train_rss"]),
              f"{row['prefill_s'] * 1e3:,.0f} ms", f"{_num(row['decode_tokens_per_s'], 1)} tokens/s",
              f"{_mib(row['prefill_memory'])} / {_mib(row['decode_memory'])}", _mib(row["disk_bytes"])]
             for name, row in rows.items()]
    note = ["Means over each run's seeds.", ""] if _several_seeds(rows) else []
    return ["## Cost", "", *note, *table(header, cells), "", *_cost_reading(rows), ""]


def _protocol(result: dict, tasks: list[str], seeds: list[int]) -> list[str]:
    config, inf = result["run_info"]["config"], result["inference_info"]
    train, data = config["train"], config["data"]
    downstream = result["eval_info"]["downstream"]
    splits = ", ".join(f"{TASK_NAMES.get(t['task'], t['task'])} {t['split']} ({t['n']} items)" for t in downstream)
    gen = inf.get("generation") or {}
    batch = next(iter(inf["by_batch"].values()))
    return [
        "## Protocol", "",
        f"- **Model and data**: `{config['model']['name']}` (runs chained with `init_from` start from the earlier "
        f"run's export), tuned on `{data['task']}` with sequences up to {data['max_length']} tokens, loss on response "
        f"tokens only; {train['steps']} steps of batch {train['batch_size']}, lr {train['lr']} (unless a run changes "
        f"it), seeds {', '.join(map(str, seeds))}, torch threads: {train.get('threads') or 'all'}. Runs of the same "
        "seed share the data order; the seed also draws the calibration batches of a cut.",
        f"- **Held-out loss**: mean cross-entropy per response token on the {result['eval_info']['final'].get('n')} "
        "held-out records of the instruction set (a seeded split), and its perplexity, after the last step.",
        f"- **Multiple choice**: zero-shot, `aptune eval` on each export; options scored by the log-likelihood of "
        f"their text (acc), and of their text divided by its length in characters (acc_norm); {splits}, "
        "the same seeded subset for every run. avg = the mean over the tasks; its ± is the standard error "
        "(√(Σ se²) / tasks).",
        f"- **Cost**: s / step = the median time of the logged training steps; training time = the training loop's "
        f"wall time (evaluations included) / the whole training process's (loading, the calibration batches of a "
        f"cut before tuning, export); a run that starts from or distils from earlier runs' exports adds their "
        f"steps and times, and its peak training memory is the highest of them all (the peak RSS of each training "
        f"process). The export is reloaded from disk in a fresh process per measurement "
        f"({inf['device']}, {inf['dtype']}, torch threads: {inf['threads']}): prefill latency = median of "
        f"{inf['repeats']} forward passes over a batch of {batch['batch_size']} x {inf['seq_len']} random tokens "
        f"after {inf['warmup']} warm-up (the language-model head on every position, as in scoring); decoding = "
        f"tokens per second of greedy generation with the KV cache, "
        f"{gen.get('new_tokens')} new tokens after a {gen.get('prompt_len')}-token prompt at batch "
        f"{gen.get('batch_size')}, end-of-sequence held back; inference memory = weights + peak activation memory "
        f"({inf['memory_method']}).",
        "",
    ]


def _shares_reading(rows: dict[str, dict], acc_share: dict, norm_share: dict) -> list[str]:
    if REFERENCE not in rows:
        return [f"No finished `{REFERENCE}` run: no shares."]
    lines = [f"Share of `{REFERENCE}`'s average multiple-choice acc (acc_norm) kept:", ""]
    for name, row in rows.items():
        if name == REFERENCE:
            continue
        paper = f"; the paper: {_pct(PAPER_SHARE[name])} for LLaMA-2-7B" if name in PAPER_SHARE else ""
        lines.append(f"- `{name}` at density {row['density']:.2f}: **{_pct(acc_share[name])}** "
                     f"({_pct(norm_share[name])}){paper}.")
    ref = rows[REFERENCE]
    margin = ref["avg_acc"] - ref["avg_chance"]
    if margin > 0:
        # near chance (small models on ARC-Challenge and MMLU) a share of the raw score flatters every method:
        # the share of the margin over chance says how much of what lora knows is kept
        kept = ", ".join(f"`{name}` {_pct((row['avg_acc'] - row['avg_chance']) / margin)}"
                         for name, row in rows.items() if name != REFERENCE)
        lines += ["", f"Share of `{REFERENCE}`'s margin over chance (average chance {ref['avg_chance']:.3f}, "
                      f"`{REFERENCE}` {margin:+.3f}): {kept}."]
    if ref.get("avg_acc_stderr"):
        lines += ["", f"One standard error of an average is about {100 * ref['avg_acc_stderr']:.1f} points "
                      f"({100 * ref['avg_acc_stderr'] / ref['avg_acc']:.1f}% of `{REFERENCE}`'s average): differences "
                      "of that size are within noise."]
    return lines


def _cost_reading(rows: dict[str, dict]) -> list[str]:
    if REFERENCE not in rows:
        return []
    ref = rows[REFERENCE]
    lines = [f"Against `{REFERENCE}` (the dense model):", ""]
    for name, row in rows.items():
        if name == REFERENCE:
            continue
        parts = [f"prefill speed-up {ref['prefill_s'] / row['prefill_s']:.2f}x"]
        if row["decode_tokens_per_s"] and ref["decode_tokens_per_s"]:
            parts.append(f"decoding {row['decode_tokens_per_s'] / ref['decode_tokens_per_s']:.2f}x the tokens/s")
        if row["s_per_step"] and ref["s_per_step"]:
            parts.append(f"a training step {row['s_per_step'] / ref['s_per_step']:.2f}x the time")
        parts.append(f"{row['params'] / ref['params']:.2f}x the parameters")
        lines.append(f"- `{name}`: " + ", ".join(parts) + ".")
    return lines


def _generations(runs: dict[str, dict]) -> list[str]:
    answered = {name: r["eval_info"].get("generations") or [] for name, r in runs.items()}
    prompts = next((g for g in answered.values() if g), [])
    if not prompts:
        return []
    lines = ["## Greedy answers", "",
             f"Greedy decoding, at most {max(a['new_tokens'] for g in answered.values() for a in g)} new tokens, "
             "the prompt formatted with the chat template as in tuning (whitespace collapsed, long answers cut).", ""]
    for i, prompt in enumerate(prompts):
        lines += [f"**{prompt['instruction']}**", ""]
        lines += table(["run", "answer"], [[f"`{name}`", _answer_cell(g[i]["answer"])]
                                           for name, g in answered.items() if i < len(g)]) + [""]
    return lines


def _runs_section(runs: dict[str, dict], runs_dir: Path) -> list[str]:
    """Each run's commands as a reader types them (``aptune.ablation.paths``): ``python`` for the interpreter,
    ``RUNS/`` for the runs folder the run ran in, checkout paths relative to the repository."""
    lines = ["## Commands", "", f"Each run's own commands, as the runner ran them (`RUNS`: the runs folder the run "
             f"ran in, `{shown_folder(runs_dir)}` for this report's runs; `python`: the runner's interpreter):", ""]
    for name, result in runs.items():
        info = result["run_info"]
        folders = runs_folders([result], runs_dir)
        lines += [f"- `{name}` ({info['what']}):", f"  - train: `{portable(info['command'], folders)}`"]
        lines += [f"  - time: `{portable(c, folders)}`" for c in info.get("inference_command") or []]
        if info.get("downstream_command"):
            lines.append(f"  - evaluate: `{portable(info['downstream_command'], folders)}`")
    return lines + [""]


def _write_csv(path: Path, rows: list[dict]) -> None:
    """One line per run and seed."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
