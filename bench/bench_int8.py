"""int8 against float32 in LiteRT, as registration measures them, on image models.

    python -m bench.bench_int8 [--models tagger,mobilenet_v2,mobilenet_v3_small]

For each model (random weights: the speed of a variant depends on its ops and sizes, not
on what it learned): a SavedModel taking uint8 pixels [H, W, 3] and scaling them inside,
as the demo tagger does, converted by prescore.models.quantize (float32, and full-integer
int8 calibrated on 64 random images) and measured by it on 64 more: one image's latency
and a batch of 64's throughput on this machine's CPU (LiteRT's default threads,
XNNPACK), the largest score difference against TensorFlow, and registration's line
(prescore.models.registration), which says what ``auto`` serves and why.

- ``tagger``: the demo tagger's architecture (examples/hotels/train_tagger.py) at 64x64;
- ``mobilenet_v2`` and ``mobilenet_v3_small``: keras.applications at 224x224.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from prescore.models.quantize import quantize_dir
from prescore.models.registration import _described
from prescore.models.tf_model import describe

MODELS = ("tagger", "mobilenet_v2", "mobilenet_v3_small")


def build(name: str) -> tuple[Any, int]:
    """The Keras model ``name`` over uint8 pixels, and its image side."""
    import keras

    if name == "tagger":
        from examples.hotels.train_tagger import build_model

        return build_model((64, 64), 8), 64
    side = 224
    pixels = keras.Input((side, side, 3), dtype="uint8", name="image")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1)(keras.ops.cast(pixels, "float32"))
    make = {
        "mobilenet_v2": keras.applications.MobileNetV2,
        "mobilenet_v3_small": keras.applications.MobileNetV3Small,
    }[name]
    kwargs = {"include_preprocessing": False} if name == "mobilenet_v3_small" else {}
    net = make(input_shape=(side, side, 3), weights=None, classes=10, **kwargs)
    return keras.Model(pixels, net(scaled)), side


def measure(name: str, folder: Path) -> dict[str, Any]:
    model, side = build(name)
    model_dir = folder / name
    model.export(str(model_dir / "saved_model"), verbose=False)
    meta = {"signature": describe(model_dir / "saved_model").to_json()}
    rng = np.random.default_rng(0)
    calibration = {"image": rng.integers(0, 256, (64, side, side, 3), dtype=np.uint8)}
    evaluation = {"image": rng.integers(0, 256, (64, side, side, 3), dtype=np.uint8)}
    return quantize_dir(model_dir, meta, calibration, evaluation, calibration_rows=64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    print(
        "| model | float32 ms/image | int8 ms/image | int8 / float32 | float32 images/s "
        "(batch 64) | int8 images/s | int8 max diff vs TF | auto serves |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for name in args.models.split(","):
            record = measure(name, Path(tmp))
            if not record["built"]:
                print(f"| {name} | not built: {record['reason']} | | | | | | tf |")
                continue
            f32, i8 = record["runtimes"]["float32"], record["runtimes"]["int8"]
            print(
                f"| {name} | {f32['single_ms']:.3f} | {i8['single_ms']:.3f} | "
                f"{i8['single_ms'] / f32['single_ms']:.2f} | {f32['batch_rows_per_s']:,.0f} | "
                f"{i8['batch_rows_per_s']:,.0f} | {i8['max_abs_diff_vs_tf']} | "
                f"{record['fastest']} |",
                flush=True,
            )
            lines.append(f"{name}: int8 variant {_described(record)}")
    print()
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
