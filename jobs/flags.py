"""Command-line flags the bulk jobs share, so each is spelled and read once."""

from __future__ import annotations

import argparse


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    """--redis-url and --model-store, overriding REDIS_URL and PRESCORE_MODEL_STORE."""
    parser.add_argument("--redis-url", help="overrides REDIS_URL")
    parser.add_argument("--model-store", help="overrides PRESCORE_MODEL_STORE")
