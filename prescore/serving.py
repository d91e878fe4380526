"""gunicorn as a library: both services run under it, configured from their settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gunicorn.app.base import BaseApplication


class GunicornApp(BaseApplication):
    """gunicorn with ``options`` instead of its own CLI and config file; ``load`` builds the app."""

    def __init__(
        self, settings: Any, options: Mapping[str, Any], load: Callable[[Any], Any]
    ) -> None:
        self.settings = settings  # gunicorn hooks reach it as worker.app.settings
        self.options = dict(options)
        self._load = load
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._load(self.settings)
