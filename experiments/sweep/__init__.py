"""Sweeps: algorithms x datasets x seeds x hyperparameter overrides, run on Ray and collected into one results
table. ``grid``: the sweep's Config, ``--set`` overrides, the trials and their algorithm configs; ``ray_run``:
running (and resuming) the trials on Ray; ``report``: results.md/.csv, trials.csv and plots from a sweep's
directory; ``__main__``: the command line (``python -m experiments.sweep``)."""
