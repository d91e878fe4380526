"""Command-line flags the job entry points share, so each is spelled and read once."""

from __future__ import annotations

import argparse
import os

from prescore.modelstore import ModelStore
from prescore.settings import Settings


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    """--redis-url and --model-store, overriding REDIS_URL and PRESCORE_MODEL_STORE."""
    parser.add_argument("--redis-url", help="overrides REDIS_URL")
    parser.add_argument("--model-store", help="overrides PRESCORE_MODEL_STORE")


def add_training_flags(parser: argparse.ArgumentParser, epochs: int) -> None:
    parser.add_argument("--model-store", help="root URI (default: $PRESCORE_MODEL_STORE)")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--promote", action="store_true")
    parser.add_argument(
        "--no-int8", dest="int8", action="store_false", help="skip the float32/int8 TFLite variants"
    )


def training_store(args: argparse.Namespace) -> ModelStore:
    """The model store a training run writes to (environment, then --model-store)."""
    settings = Settings.from_env(os.environ).with_overrides(model_store=args.model_store)
    return ModelStore(settings.models)
