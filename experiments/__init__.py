"""Experiments: sweeps of algorithms x datasets x seeds x overrides (``experiments.sweep``), the run records
kept under bench/results/ with README's results block and the records page generated from them
(``experiments.records``; the figures in ``scores``, their wording in ``tables``), and what they draw on:
learning curves and profiles (``curves``), published scores (``published``) and the throughput chart of
pytest-benchmark runs (``throughput``). Imports algos and engine, never bench."""
