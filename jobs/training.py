"""What the training entry points share: flags, the store they write to, saving a version."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prescore.models.store import ModelStore
from prescore.settings import Settings


@dataclass(frozen=True)
class TrainResult:
    version: str
    metrics: dict[str, float]
    promoted: bool


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


def store_trained(
    store: ModelStore, name: str, model_dir: Path, meta: dict[str, Any], promote: bool
) -> TrainResult:
    """Save a built model directory as the next version of ``name``, promote if asked."""
    version = store.save(name, model_dir, meta)
    if promote:
        store.promote(name, version)
    return TrainResult(version, meta["metrics"], promote)


def run_training(
    args: argparse.Namespace,
    source: Path,
    train: Callable[..., TrainResult],
    describe: Callable[[TrainResult], str],
) -> int:
    """A training CLI: train from ``source`` with the shared flags, print one summary line."""
    started = time.perf_counter()
    result = train(
        source,
        training_store(args),
        epochs=args.epochs,
        seed=args.seed,
        promote=args.promote,
        int8=args.int8,
    )
    print(f"{describe(result)}; {time.perf_counter() - started:.1f}s")
    return 0
