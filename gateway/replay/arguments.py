"""The arguments of ``actiongate replay``, declared once (light: the CLI imports it at start)."""

from __future__ import annotations

import argparse

__all__ = ["add_replay_arguments"]


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``actiongate replay`` (and ``python -m gateway.replay``)."""
    parser.add_argument("cassette", nargs="+", metavar="CASSETTE", help="a cassette or a directory")
    parser.add_argument(
        "--config", metavar="FILE", help="default: the config recorded in the cassette"
    )
    parser.add_argument("--json", action="store_true", help="one JSON report per cassette")
