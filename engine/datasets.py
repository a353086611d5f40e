"""``python -m engine.datasets``: an alias of ``python -m engine.data`` (the datasets' command line lives in
engine/data/__main__.py), kept so that existing commands keep working."""

from engine.data.__main__ import main

if __name__ == "__main__":
    main()
