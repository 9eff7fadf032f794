"""Measuring models: inference latency, throughput and memory (timing claims live here, not in tests)."""

from aptune.bench.latency import (GenerationResult, LatencyResult, compare_generation, compare_latency, dummy_batch,
                                  measure_generation, measure_latency)

__all__ = ["GenerationResult", "LatencyResult", "compare_generation", "compare_latency", "dummy_batch",
           "measure_generation", "measure_latency"]
