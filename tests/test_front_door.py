"""What a newcomer reads stays a front door: a README of at most 250 lines without internal issue numbers, an index
that names every study folder, and a benchmarks index that names every script."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISSUE = re.compile(r"issue [0-9]", re.IGNORECASE)


def test_the_readme_is_short_and_finds_the_main_job_own_loop_trainer_and_export_early():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    first = "\n".join(lines[:150])
    for needle in ("aptune train --config minilm/sst2", "apt.after_optimizer_step", "APTTrainer", "--format onnx",
                   "--format gguf"):
        assert needle in first, needle


def test_no_issue_numbers_where_a_user_reads():
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md")),
             *sorted((ROOT / "src" / "aptune" / "configs").rglob("*.yaml"))]
    found = [f"{page.relative_to(ROOT)}:{n}" for page in pages
             for n, line in enumerate(page.read_text().splitlines(), 1) if ISSUE.search(line)]
    assert not found


def test_the_results_index_names_every_study_folder_and_the_benchmarks_index_every_script():
    index = (ROOT / "results" / "README.md").read_text()
    folders = sorted(p.relative_to(ROOT / "results").as_posix() for p in (ROOT / "results").rglob("*") if p.is_dir())
    assert folders and [f for f in folders if f not in index] == []
    benchmarks = (ROOT / "benchmarks" / "README.md").read_text()
    scripts = sorted(p.name for p in (ROOT / "benchmarks").iterdir() if p.name != "README.md")
    assert scripts and [s for s in scripts if s not in benchmarks] == []
