"""``python -m cntr_sync``: the same command line as ``cntr-sync``."""

from cntr_sync.cli import console

if __name__ == "__main__":
    console()
