"""The ablation machinery: a plan of config patches (``plan``), a runner that trains and times every run in
its own process (``runner``, ``inference``), and a report with tables, plots and readings (``report``)."""

from aptune.ablation.plan import METRIC_GROUPS, InferenceSettings, Plan, RunSpec, Variant, load_plan
from aptune.ablation.runner import run_plan

__all__ = ["METRIC_GROUPS", "InferenceSettings", "Plan", "RunSpec", "Variant", "load_plan", "run_plan"]
