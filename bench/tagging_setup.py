"""A MobileNet-class photo tagger for the tagging benchmark, exported as a team exports
its own model: a SavedModel whose serving signature takes uint8 photos, and model.json.

Random weights (``weights=None``): speed does not depend on what the model learned, and
nothing is downloaded. :func:`prepare` writes a benchmark's photos and registers its model.
"""

from __future__ import annotations

import json
from pathlib import Path

from examples.hotels.imagegen import LABELS, TAGS

INPUT_SIZE = 224


def mobilenet_tagger(out: Path, size: int = INPUT_SIZE, seed: int = 5) -> Path:
    """Write ``out/saved_model`` and ``out/model.json`` of MobileNetV3Small over the demo's
    tags (sigmoid outputs, threshold 0.5 each); returns ``out``."""
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((size, size, 3), dtype="uint8", name="image")
    net = keras.applications.MobileNetV3Small(
        input_shape=(size, size, 3),
        weights=None,
        classes=len(TAGS),
        classifier_activation="sigmoid",
        include_preprocessing=True,
    )
    model = keras.Model(image, net(keras.ops.cast(image, "float32")))
    model.export(str(out / "saved_model"), verbose=False)
    meta = {
        "kind": "labels",
        "description": "MobileNetV3Small photo tagger, random weights (benchmark only)",
        "labels": list(TAGS),
        "label_names": dict(LABELS),
        "thresholds": dict.fromkeys(TAGS, 0.5),
    }
    (out / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out


def prepare(
    config: Path, work: Path, count: int, size: tuple[int, int] | None, int8: bool = False
) -> tuple[str, str]:
    """``count`` photos under ``work/images`` (the demo's, or photo-like ones of ``size``)
    and the ``tagger`` registered in ``work/models`` (with its LiteRT variants where
    ``int8``); (photos, model) in words."""
    from examples.hotels.imagegen import generate
    from prescore.data.datasets import load
    from prescore.models.registration import register
    from prescore.models.store import ModelStore
    from prescore.settings import ModelStoreSettings

    images = work / "images"  # where the demo's declaration reads: $PRESCORE_VAR/images
    generate(images, count, seed=5, size=size)
    if size:
        mobilenet_tagger(work / "train")
        what = f"{size[0]}x{size[1]} photo-like JPEG", "MobileNetV3Small"
    else:
        from examples.hotels.train_tagger import train

        train(images, work / "train", epochs=2, seed=5)
        what = "96-160 px JPEG", "the demo's CNN"
    catalog = load(config, {"PRESCORE_VAR": str(work)})
    store = ModelStore(ModelStoreSettings(root=(work / "models").as_uri()))
    register(
        store,
        catalog,
        "tagger",
        str(work / "train"),
        promote=True,
        int8=int8,
        say=lambda _: None,
    )
    return what
