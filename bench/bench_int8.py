"""int8 against float32 in LiteRT, as registration measures them, on image models.

    python -m bench.bench_int8 [--models tagger,mobilenet_v2,mobilenet_v3_small]

For each model (random weights: the speed of a variant depends on its ops and sizes, not
on what it learned): a SavedModel taking uint8 pixels [H, W, 3] and scaling them inside,
as the demo tagger does, converted by prescore.models.quantize (float32, and full-integer
int8 calibrated on 64 random images) and measured by it on 64 more: one image's latency
and a batch of 64's throughput on this machine's CPU (LiteRT's default threads,
XNNPACK), the largest score difference against TensorFlow, and registration's line
(prescore.models.registration), which says what ``auto`` serves and why.

A second table times one image's ``invoke`` of the int8 file in the bare interpreter
(one thread) three ways: as registered (uint8 pixels in; a Cast and a Quantize at the
graph's edge); converted for integer input (the same layers over float pixels, the
converter's ``inference_input_type=int8``: no edge op, the pixels fed as ``p - 128``,
exact since the input is quantized at scale 1); and as registered without XNNPACK
(LiteRT's builtin kernels only, which is how its use is verified).

- ``tagger``: the demo tagger's architecture (examples/hotels/train_tagger.py) at 64x64;
- ``mobilenet_v2`` and ``mobilenet_v3_small``: keras.applications at 224x224.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import describe as machine
from prescore.models.quantize import median_seconds, quantize_dir
from prescore.models.registration import _described
from prescore.models.tf_model import describe

MODELS = ("tagger", "mobilenet_v2", "mobilenet_v3_small")


def build(name: str) -> tuple[Any, Any, int]:
    """The Keras model ``name`` over uint8 pixels, its twin over float pixels in [0, 255]
    (the same layers and weights, no cast), and its image side."""
    import keras

    if name == "tagger":
        from examples.hotels.train_tagger import build_model

        model, side = build_model((64, 64), 8), 64
        h = floats = keras.Input((side, side, 3), dtype="float32")
        for layer in model.layers[1:]:  # a chain: Rescaling casts what it is given
            h = layer(h)
        return model, keras.Model(floats, h), side
    side = 224
    make = {
        "mobilenet_v2": keras.applications.MobileNetV2,
        "mobilenet_v3_small": keras.applications.MobileNetV3Small,
    }[name]
    kwargs = {"include_preprocessing": False} if name == "mobilenet_v3_small" else {}
    net = make(input_shape=(side, side, 3), weights=None, classes=10, **kwargs)
    scale = keras.layers.Rescaling(1 / 127.5, offset=-1)
    pixels = keras.Input((side, side, 3), dtype="uint8", name="image")
    floats = keras.Input((side, side, 3), dtype="float32", name="image")
    return (
        keras.Model(pixels, net(scale(keras.ops.cast(pixels, "float32")))),
        keras.Model(floats, net(scale(floats))),
        side,
    )


def measure(model: Any, side: int, folder: Path) -> dict[str, Any]:
    model.export(str(folder / "saved_model"), verbose=False)
    meta = {"signature": describe(folder / "saved_model").to_json()}
    rng = np.random.default_rng(0)
    calibration = {"image": rng.integers(0, 256, (64, side, side, 3), dtype=np.uint8)}
    evaluation = {"image": rng.integers(0, 256, (64, side, side, 3), dtype=np.uint8)}
    return quantize_dir(folder, meta, calibration, evaluation, calibration_rows=64)


def integer_input(floats: Any, side: int, folder: Path) -> bytes:
    """The float-pixel twin as full-integer int8 taking int8 input (no edge op)."""
    import tensorflow as tf

    floats.export(str(folder / "float_in"), verbose=False)
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, (64, side, side, 3)).astype(np.float32)

    def samples() -> Iterator[list[np.ndarray]]:
        for i in range(len(calibration)):
            yield [calibration[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder / "float_in"))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    return converter.convert()


def invoke_us(content: bytes, side: int, xnnpack: bool = True, repeats: int = 200) -> float:
    """Median microseconds of one image's set_tensor, invoke and get_tensor, one thread."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(
        model_content=content, num_threads=1, experimental_op_resolver_type=resolver
    )
    interp.allocate_tensors()
    given, out = interp.get_input_details()[0], interp.get_output_details()[0]
    pixels = np.random.default_rng(1).integers(0, 256, (1, side, side, 3), dtype=np.uint8)
    if given["dtype"] == np.int8:
        if tuple(given["quantization"]) != (1.0, -128):
            return float("nan")  # not the exact pixel mapping this feed assumes
        pixels = (pixels ^ np.uint8(0x80)).view(np.int8)  # p - 128, as int8

    def once() -> None:
        interp.set_tensor(given["index"], pixels)
        interp.invoke()
        interp.get_tensor(out["index"])

    for _ in range(10):  # the interpreter's first runs set up its kernels
        once()
    return median_seconds(once, repeats) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    print(f"bench_int8: {machine()}\n")
    print(
        "| model | float32 ms/image | int8 ms/image | int8 / float32 | float32 images/s "
        "(batch 64) | int8 images/s | int8 max diff vs TF | auto serves |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    lines, edges = [], []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for name in args.models.split(","):
            folder = Path(tmp) / name
            model, floats, side = build(name)
            record = measure(model, side, folder)
            if not {"float32", "int8"} <= set(record.get("runtimes", {})):
                print(f"| {name} | int8 {_described(record)} | | | | | | |")
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
            registered = (folder / "model_int8.tflite").read_bytes()
            fed = integer_input(floats, side, folder)
            edges.append(
                f"| {name} | {invoke_us(registered, side):,.0f} | {invoke_us(fed, side):,.0f} | "
                f"{invoke_us(registered, side, xnnpack=False, repeats=20):,.0f} |"
            )
    print()
    for line in lines:
        print(line)
    print(
        "\n| model | int8 as registered, uint8 in (µs) | int8 fed integers, no edge op (µs) "
        "| int8 as registered, XNNPACK off (µs) |"
    )
    print("|---|---:|---:|---:|")
    print("\n".join(edges))
    return 0


if __name__ == "__main__":
    sys.exit(main())
