"""Frozen settings of the live inference fallback, built once from env vars (and serve flags)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prescore.inference import RUNTIMES
from prescore.settings import Settings, env_bool, env_float, env_int, env_str
from prescore.storage import check_uri


@dataclass(frozen=True)
class BatchSettings:
    """Micro-batching of one model: rows per model call, wait for company, queue bound."""

    max_batch: int
    max_wait_s: float = 0.005
    max_queue: int = 256
    adaptive: bool = True  # stop waiting once every request on its way is in the batch

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str, max_batch: int) -> BatchSettings:
        return cls(
            max_batch=env_int(env, f"{prefix}_MAX_BATCH", max_batch),
            max_wait_s=env_float(env, f"{prefix}_MAX_WAIT_MS", cls.max_wait_s * 1000) / 1000,
            max_queue=env_int(env, f"{prefix}_MAX_QUEUE", cls.max_queue),
            adaptive=env_bool(env, f"{prefix}_ADAPTIVE", cls.adaptive),
        )


@dataclass(frozen=True)
class FallbackSettings:
    """Everything the fallback service needs; the core settings included."""

    core: Settings = field(default_factory=Settings)
    bind: str = "127.0.0.1:8081"
    # One process: micro-batching merges the requests of one process, and TensorFlow
    # already uses every core for one batch. Threads carry the concurrent requests.
    workers: int = 1
    threads: int = 32
    graceful_timeout_s: int = 10  # a worker still busy this long after SIGTERM is killed
    models: tuple[str, ...] = ("reco", "tagger")
    reco_runtime: str = "auto"  # tf | float32 | int8 | auto (fastest measured at build)
    tagger_runtime: str = "auto"
    inference_threads: int = 0  # LiteRT threads per interpreter; 0: all cores
    reco_batch: BatchSettings = field(default_factory=lambda: BatchSettings(max_batch=4096))
    tagger_batch: BatchSettings = field(default_factory=lambda: BatchSettings(max_batch=32))
    request_timeout_s: float = 5.0  # a request waiting longer for the model gets a 504
    watch_interval_s: float = 5.0  # how often the PROMOTED pointers are checked
    swap_grace_s: float = 5.0  # a replaced model keeps answering requests already holding it
    data_dir: str = ""  # users/hotels tables of reco (default: model.json data.path)
    # Folder of the hotel photos (file:// or hdfs://); image <id> is <folder>/<id>.<ext>.
    # Empty: tags are answered only for images sent in the request.
    photos: str = ""
    photos_webhdfs_url: str = ""  # WebHDFS endpoint of an hdfs:// photos folder
    default_k: int = 10
    max_k: int = 100
    max_instances: int = 100  # users (or images) in one request
    max_candidates: int = 2000  # hotels scored for one user
    max_body_bytes: int = 8 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FallbackSettings:
        env = os.environ if env is None else env
        settings = cls(
            core=Settings.from_env(env),
            bind=env_str(env, "FALLBACK_BIND", cls.bind),
            workers=env_int(env, "FALLBACK_WORKERS", cls.workers),
            threads=env_int(env, "FALLBACK_THREADS", cls.threads),
            graceful_timeout_s=env_int(env, "FALLBACK_GRACEFUL_TIMEOUT_S", cls.graceful_timeout_s),
            models=tuple(
                m for m in env_str(env, "FALLBACK_MODELS", ",".join(cls.models)).split(",") if m
            ),
            reco_runtime=env_str(env, "FALLBACK_RECO_RUNTIME", cls.reco_runtime),
            tagger_runtime=env_str(env, "FALLBACK_TAGGER_RUNTIME", cls.tagger_runtime),
            inference_threads=env_int(env, "FALLBACK_INFERENCE_THREADS", cls.inference_threads),
            reco_batch=BatchSettings.from_env(env, "FALLBACK_RECO", 4096),
            tagger_batch=BatchSettings.from_env(env, "FALLBACK_TAGGER", 32),
            request_timeout_s=env_float(env, "FALLBACK_REQUEST_TIMEOUT_S", cls.request_timeout_s),
            watch_interval_s=env_float(env, "FALLBACK_WATCH_INTERVAL_S", cls.watch_interval_s),
            swap_grace_s=env_float(env, "FALLBACK_SWAP_GRACE_S", cls.swap_grace_s),
            data_dir=env_str(env, "FALLBACK_DATA_DIR", cls.data_dir),
            photos=env_str(env, "FALLBACK_PHOTOS", cls.photos),
            photos_webhdfs_url=env_str(env, "FALLBACK_PHOTOS_WEBHDFS_URL", cls.photos_webhdfs_url),
            default_k=env_int(env, "FALLBACK_DEFAULT_K", cls.default_k),
            max_k=env_int(env, "FALLBACK_MAX_K", cls.max_k),
            max_instances=env_int(env, "FALLBACK_MAX_INSTANCES", cls.max_instances),
            max_candidates=env_int(env, "FALLBACK_MAX_CANDIDATES", cls.max_candidates),
            max_body_bytes=env_int(env, "FALLBACK_MAX_BODY_BYTES", cls.max_body_bytes),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that cannot work, at start-up rather than per request."""
        for runtime in (self.reco_runtime, self.tagger_runtime):
            if runtime != "auto" and runtime not in RUNTIMES:
                raise ValueError(f"runtime must be auto or one of {RUNTIMES}, got {runtime!r}")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError("need 1 <= default_k <= max_k")
        if self.photos:
            check_uri(self.photos)
        unknown = set(self.models) - {"reco", "tagger"}
        if unknown or not self.models:
            raise ValueError(f"models must be some of reco,tagger; got {self.models}")

    def runtime_for(self, model: str) -> str:
        return self.reco_runtime if model == "reco" else self.tagger_runtime

    def batch_for(self, model: str) -> BatchSettings:
        return self.reco_batch if model == "reco" else self.tagger_batch

    def with_changes(self, **changes: Any) -> FallbackSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
