"""The one exception tree of prescore, and its mapping to HTTP.

    PrescoreError                 anything prescore raises on purpose
    ├── InvalidInput              the caller sent something we will not take (4xx)
    │   ├── PayloadTooLarge       body or batch over its bound (413)
    │   └── UnsupportedMediaType  wrong Content-Type (415)
    ├── Unauthorized              a route that needs a token got none or a wrong one (401)
    ├── NotFound                  the key or version does not exist (404)
    ├── Unavailable               a dependency is down or slow; retry later (503)
    │   ├── StoreUnavailable      Redis unreachable or timed out
    │   ├── StorageUnavailable    a file store (hdfs://, s3://, gs://) failed a read or write
    │   ├── ImageStoreUnavailable an image folder (file://, hdfs://, s3://, gs://) cannot be read
    │   └── FallbackUnavailable   live inference down or breaker open
    │       └── FallbackTimeout   live inference did not answer within its deadline (504)
    ├── PublishError              a job's version failed verification; nothing moved
    ├── ModelStoreError           a model or its metadata is missing or unreadable
    │   └── ModelMismatch         a model's signature does not fit its dataset
    └── ConfigError               a setting or a dataset declaration is wrong (one line)

Every error carries a stable machine-readable ``code`` that clients can switch on;
``http_status`` is the one place where errors meet HTTP.
"""

from __future__ import annotations

import re


class PrescoreError(Exception):
    """Base of every error prescore raises on purpose."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None, cause: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause  # for the log only: what the caller is not told (a 5xx's why)
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        """The JSON error body: a stable code and a human message."""
        return {"error": self.code, "message": self.message}


class InvalidInput(PrescoreError):
    code = "invalid_input"
    http_status = 400


class PayloadTooLarge(InvalidInput):
    code = "too_large"
    http_status = 413


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"
    http_status = 415


class Unscorable(PrescoreError):
    """The key is known, but live inference cannot use the input its dataset holds for
    it (a corrupt image, a row the model refuses): the data needs fixing, not a retry."""

    code = "unscorable_input"
    http_status = 422


class Unauthorized(PrescoreError):
    code = "unauthorized"
    http_status = 401


class NotFound(PrescoreError):
    code = "not_found"
    http_status = 404


class Unavailable(PrescoreError):
    code = "unavailable"
    http_status = 503


class StoreUnavailable(Unavailable):
    code = "store_unavailable"


class StorageUnavailable(Unavailable, OSError):
    """A file store (the model store, a table, a folder on hdfs://, s3:// or gs://) failed a
    read or write. Also an OSError, so code that takes any I/O failure of a store (the
    photo store, the table mirror) takes it as such."""

    code = "storage_unavailable"


class ImageStoreUnavailable(Unavailable):
    code = "image_store_unavailable"


class FallbackUnavailable(Unavailable):
    code = "fallback_unavailable"


class FallbackTimeout(FallbackUnavailable):
    code = "fallback_timeout"
    http_status = 504


class PublishError(PrescoreError):
    code = "publish_failed"


class ModelStoreError(PrescoreError):
    code = "model_store"


class ModelMismatch(ModelStoreError):
    code = "model_mismatch"


class ConfigError(PrescoreError):
    code = "bad_config"


_RAISED = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit): .+")


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``exc`` as one line of at most ``limit`` characters, for a record: its type and its
    message's first line; for a message that carries a traceback (a Spark task's), the
    error it ends with."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    raised = [line for line in lines if _RAISED.match(line)]
    name = type(exc).__name__
    text = raised[-1] if raised else (f"{name}: {lines[0]}" if lines else name)
    return text if len(text) <= limit else text[: limit - 3] + "..."
