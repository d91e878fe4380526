"""What a bulk run scores in: the SavedModel in TensorFlow, or one of its LiteRT variants.

Decided once, on the driver, before any task starts (``--runtime``):

- ``tf``: the SavedModel, as every kind is scored by default;
- ``float32`` / ``int8``: a labels run's LiteRT variant built at registration, refused
  if the version lacks it or registration found it answering otherwise than the
  SavedModel (its one-line verdict is the reason);
- ``auto``: the faster of ``tf`` and ``float32`` as registration measured them, never
  ``int8``: a bulk run publishes what the model says, and int8's 8-bit steps move scores
  (enough for the publish gates' drift check to hold the run back), so int8 is asked for
  by name. A ranking run is always ``tf``: the LiteRT files hold ``serving_default`` only,
  not the factored signatures the job scores with.
"""

from __future__ import annotations

from typing import Any

from prescore.errors import ConfigError
from prescore.models.inference import RUNTIMES, TFLITE_FILES
from prescore.models.store import ModelRef

CHOICES = (*RUNTIMES, "auto")
_EXACT = ("tf", "float32")  # what auto chooses from: both publish what the SavedModel does


def chosen_runtime(kind: str, ref: ModelRef, asked: str) -> str:
    """The runtime a run of a ``kind`` dataset with model ``ref`` scores in."""
    if asked == "tf" or (asked == "auto" and kind != "labels"):
        return "tf"
    if kind != "labels":
        raise ConfigError(
            f"--runtime {asked}: a {kind} dataset is scored in TensorFlow (LiteRT variants "
            "hold serving_default only, not the factored signatures)"
        )
    quant: dict[str, Any] = ref.meta.get("quantization") or {}
    measured: dict[str, Any] = quant.get("runtimes") or {}
    if asked == "auto":
        usable = [r for r in _EXACT if r == "tf" or _usable(ref, measured, r)]
        return max(usable, key=lambda r: measured.get(r, {}).get("batch_rows_per_s", 0.0))
    if not (ref.path / TFLITE_FILES[asked]).is_file():
        raise ConfigError(
            f"--runtime {asked}: {ref.name}/{ref.version} has no {asked} variant "
            f"({(quant.get('not_built') or {}).get(asked) or quant.get('reason') or 'not built'})"
        )
    if not _usable(ref, measured, asked):
        raise ConfigError(
            f"--runtime {asked}: {ref.name}/{ref.version}'s {asked} variant does not answer "
            f"as its SavedModel does (registration measured scores up to "
            f"{measured.get(asked, {}).get('max_abs_diff_vs_tf', '?')} apart on its sample)"
        )
    return asked


def _usable(ref: ModelRef, measured: dict[str, Any], runtime: str) -> bool:
    """Whether registration built ``runtime``'s file and found it agreeing."""
    found = (ref.path / TFLITE_FILES[runtime]).is_file()
    return found and bool(measured.get(runtime, {}).get("agrees"))
