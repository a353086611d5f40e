"""Adapters that run peer offline-RL libraries on simloop datasets and score them with simloop's evaluator
(peers/README.md)."""
