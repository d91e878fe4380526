"""Command-line flags the bulk jobs share, so each is spelled and read once."""

from __future__ import annotations

import argparse


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    """--redis-url, --model-store and --config, overriding REDIS_URL, PRESCORE_MODEL_STORE
    and PRESCORE_CONFIG."""
    parser.add_argument("--redis-url", help="overrides REDIS_URL")
    parser.add_argument("--model-store", help="overrides PRESCORE_MODEL_STORE")
    parser.add_argument("--config", help="the dataset declarations (overrides PRESCORE_CONFIG)")


def at_least_one(text: str) -> int:
    """A flag's whole number of at least 1 (argparse names the flag when this refuses)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value
