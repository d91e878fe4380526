"""The record of one retraining run: which steps finished, with what result.

A run keeps ``{state_dir}/{run_id}/state.json`` (default state dir: ``{var}/retrain``).
A step that finished is written there (atomically: write, then rename) before the next one
starts, so a run killed anywhere and started again with the same run id skips what is
done and redoes at most the step it was in. Every step is written so that redoing it is
harmless.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prescore.errors import InvalidInput, PrescoreError

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    """A run id of its own: the second it began, and a random part (two runs begun in
    one second shared one state and one model folder)."""
    began = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"retrain-{began}-{secrets.token_hex(3)}"


class RunState:
    """Finished steps of one run, persisted after each step."""

    def __init__(self, state_dir: str | Path, run_id: str) -> None:
        if not _RUN_ID.match(run_id):
            raise InvalidInput(f"bad run id {run_id!r}", code="invalid_run_id")
        self.run_id = run_id
        self.dir = Path(state_dir) / run_id
        self.path = self.dir / "state.json"
        self._lock = _hold(self.dir / "lock", run_id)
        self.data: dict[str, Any] = (
            json.loads(self.path.read_text())
            if self.path.exists()
            else {"run_id": run_id, "started_at": now_iso(), "steps": {}}
        )

    @property
    def started_at(self) -> str:
        return str(self.data["started_at"])

    def done(self, step: str) -> bool:
        return step in self.data["steps"]

    def result(self, step: str) -> dict[str, Any]:
        return dict(self.data["steps"][step])

    def record(self, step: str, result: dict[str, Any]) -> None:
        """Mark ``step`` finished with ``result``; durable before this returns."""
        self.data["steps"][step] = {**result, "finished_at": now_iso()}
        self._write(self.path, self.data)

    def close(self) -> None:
        """Let another process take this run (also when this one exits or is killed)."""
        self._lock.close()

    def write_report(self, report: dict[str, Any]) -> Path:
        path = self.dir / "report.json"
        self._write(path, report)
        return path

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _hold(path: Path, run_id: str) -> Any:
    """An exclusive lock on the run's folder, held while the process runs it (the OS
    releases it when the process ends, however it ends); PrescoreError ``run_busy`` when
    another process runs it now."""
    path.parent.mkdir(parents=True, exist_ok=True)
    held = open(path, "a+")  # noqa: SIM115 (held for the run's life, closed by close())
    try:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.close()
        raise PrescoreError(
            f"run {run_id} is running in another process; wait for it, or give another --run-id",
            code="run_busy",
        ) from None
    return held
