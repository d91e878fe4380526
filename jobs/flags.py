"""Command-line flags the bulk jobs share, so each is spelled and read once."""

from __future__ import annotations

import argparse


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    """--redis-url, --model-store and --config, overriding REDIS_URL, PRESCORE_MODEL_STORE
    and PRESCORE_CONFIG."""
    parser.add_argument("--redis-url", help="overrides REDIS_URL")
    parser.add_argument("--model-store", help="overrides PRESCORE_MODEL_STORE")
    parser.add_argument("--config", help="the dataset declarations (overrides PRESCORE_CONFIG)")
