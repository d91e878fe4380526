"""Small real Keras models for the fallback tests: a dense scorer and a multi-label CNN.

Each is trained for a few epochs on synthetic rows with a learnable rule, so quality
figures (AUC / mAP) mean something, and exported as a model version directory
(saved_model/ + model.json) like the training jobs write.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DENSE_FEATURES = 12
IMAGE_SIZE = 16
TAGS = ["pool", "sea_view", "bed"]


def dense_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DENSE_FEATURES)).astype(np.float32)
    logit = x[:, 0] * 1.5 - x[:, 1] + 0.8 * x[:, 2] * x[:, 3]
    y = (logit + rng.normal(scale=0.5, size=n) > 0).astype(np.float32)
    return x, y


def image_data(n: int, seed: int = 0, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Images whose channels carry the tags: red pool, green sea view, blue bed."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(TAGS))) < 0.4).astype(np.float32)
    x = rng.random((n, size, size, 3)).astype(np.float32) * 0.5
    x[..., :3] += y[:, None, None, :] * 0.5
    return x, y


def build_dense(out: Path, seed: int = 0, epochs: int = 8) -> Path:
    import keras

    keras.utils.set_random_seed(seed)
    x, y = dense_data(2000, seed)
    model = keras.Sequential(
        [
            keras.Input((DENSE_FEATURES,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    model.export(str(out / "saved_model"), verbose=False)
    return out


def build_cnn(out: Path, seed: int = 0, epochs: int = 4, size: int = IMAGE_SIZE) -> Path:
    import keras

    keras.utils.set_random_seed(seed)
    x, y = image_data(600, seed, size)
    wide = 2 if size > IMAGE_SIZE else 1  # the bench's larger images get a larger net
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(8 * wide, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16 * wide, 3, activation="relu"),
            *(
                [keras.layers.MaxPooling2D(), keras.layers.Conv2D(32 * wide, 3, activation="relu")]
                if wide > 1
                else []
            ),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(TAGS), activation="sigmoid"),
        ]
    )
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    model.export(str(out / "saved_model"), verbose=False)
    return out


def tagger_meta() -> dict[str, Any]:
    return {
        "tags": TAGS,
        "thresholds": {t: 0.5 for t in TAGS},
        "image_size": [IMAGE_SIZE, IMAGE_SIZE],
    }


# --- a recommender model version as the fallback serves it --------------------------------
# The featurizer named in model.json: rows = user vector * hotel vector (elementwise), so
# scores depend on both; a user is known by the features sent, or by model.json "users".


def _vector(token: str) -> np.ndarray:
    seed = int.from_bytes(token.encode()[:8].ljust(8, b"\0"), "little") % (2**32)
    return np.random.default_rng(seed).normal(size=DENSE_FEATURES).astype(np.float32)


def dense_rows(
    meta: dict[str, Any], features: dict[str, Any], context: str | None, hotel_ids: list[str]
) -> np.ndarray:
    from prescore.errors import NotFound

    vec = features.get("vec") or meta.get("users", {}).get(features.get("user_id", ""))
    if vec is None:
        raise NotFound("unknown user and no features given", code="not_found")
    user = np.asarray(vec, np.float32)
    return np.stack([user * _vector(h) for h in hotel_ids])


def candidates(meta: dict[str, Any], features: dict[str, Any], context: str | None) -> list[str]:
    return list(meta.get("hotels", []))


HOTELS = [f"h{i}" for i in range(40)]


def reco_meta(users: dict[str, list[float]] | None = None) -> dict[str, Any]:
    return {
        "featurizer": "tests.fallback_models:dense_rows",
        "hotels": HOTELS,
        "users": users or {},
        "input_shape": [DENSE_FEATURES],
    }


def save_models(root_uri: str, tmp: Path, *, quantize: bool = True) -> None:
    """Build, quantize, save and promote a reco and a tagger version under ``root_uri``."""
    from jobs.quantize import quantize_dir
    from prescore.modelstore import ModelStore
    from prescore.settings import ModelStoreSettings

    store = ModelStore(ModelStoreSettings(root=root_uri))
    reco = build_dense(tmp / "reco")
    tagger = build_cnn(tmp / "tagger")
    reco_m = reco_meta({"u_known": [0.5] * DENSE_FEATURES})
    tag_m = {**tagger_meta(), "input_shape": [IMAGE_SIZE, IMAGE_SIZE, 3]}
    if quantize:
        x, y = dense_data(300, 1)
        reco_m["quantization"] = quantize_dir(reco, x, x, y, "auc")
        xi, yi = image_data(100, 1)
        tag_m["quantization"] = quantize_dir(tagger, xi, xi, yi, "map")
    store.promote("reco", store.save("reco", reco, reco_m))
    store.promote("tagger", store.save("tagger", tagger, tag_m))


# --- hotel photos for the tagger -----------------------------------------------------------


def jpeg(tags: set[str], size: int = IMAGE_SIZE) -> bytes:
    """A JPEG photo whose channels carry ``tags`` (the rule the small CNN learns)."""
    import io

    from PIL import Image

    x = np.full((size, size, 3), 0.25, np.float32)
    for j, tag in enumerate(TAGS):
        if tag in tags:
            x[..., j] += 0.5
    buf = io.BytesIO()
    Image.fromarray((x * 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def model_tags(store_root: str, raw: bytes) -> dict[str, float]:
    """The promoted tagger's tags at or above threshold for photo ``raw`` (TF runtime)."""
    from prescore.image_features import decode
    from prescore.inference import load_runner
    from prescore.modelstore import ModelStore
    from prescore.settings import ModelStoreSettings

    ref = ModelStore(ModelStoreSettings(root=store_root)).resolve("tagger")
    size = tuple(int(v) for v in ref.meta["image_size"])
    scores = load_runner(ref.path, "tf")(decode(raw, (size[0], size[1]))[None])[0]
    floor = ref.meta["thresholds"]
    return {t: float(s) for t, s in zip(ref.meta["tags"], scores, strict=True) if s >= floor[t]}


def photo_folder(root: Path, photos: dict[str, set[str]], junk: bool = False) -> Path:
    """``root/photos`` holding a JPEG per id drawn with its tags (and with ``junk`` a
    file that is no image), and beside the folder ``root/secret.jpg``, outside it."""
    folder = root / "photos"
    folder.mkdir()
    for image_id, tags in photos.items():
        (folder / f"{image_id}.jpg").write_bytes(jpeg(tags))
    if junk:
        (folder / "p-junk.png").write_bytes(b"not an image")
    (root / "secret.jpg").write_bytes(jpeg({"pool"}))
    return folder


def saved_store(tmp: Path) -> str:
    """A model store under ``tmp`` holding both models (float32 only), promoted."""
    root = (tmp / "models").as_uri()
    save_models(root, tmp, quantize=False)
    return root
