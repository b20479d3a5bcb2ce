"""``python -m gateway.replay CASSETTE...``: the same as ``actiongate replay``."""

from __future__ import annotations

import sys

from gateway.replay.run import main

if __name__ == "__main__":
    sys.exit(main())
