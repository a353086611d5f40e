"""Experiments: sweeps of algorithms x datasets x seeds x overrides (``experiments.sweep``), the run records
kept under bench/results/ and README's results table (``experiments.records``), and what both draw on:
learning curves (``curves``), published scores (``published``) and the throughput chart of pytest-benchmark
runs (``throughput``). Imports algos and engine, never bench."""
