"""``python -m bench.report``: an alias of ``python -m experiments.records`` (the run records' tools live in
experiments/records.py; the records stay in bench/results/), kept so that existing commands keep working."""

import sys

from experiments.records import main

if __name__ == "__main__":
    sys.exit(main())
