"""``python -m bench.sweep``: an alias of ``python -m experiments.sweep`` (sweeps live in experiments/sweep/),
kept so that existing commands keep working."""

import sys

from experiments.sweep.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
