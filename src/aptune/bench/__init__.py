"""Measuring models: inference latency, throughput and memory (timing claims live here, not in tests)."""

from aptune.bench.latency import LatencyResult, dummy_batch, measure_latency, compare_latency

__all__ = ["LatencyResult", "compare_latency", "dummy_batch", "measure_latency"]
