"""``granian --interface wsgi lookup.wsgi:app`` (or any WSGI server): the app built from env vars.

With several workers, set PROMETHEUS_MULTIPROC_DIR to an empty directory first so that
/metrics sums every worker (``python -m lookup.serve`` does this by itself).
"""

from __future__ import annotations

from lookup.app import create_app
from lookup.settings import LookupSettings

app = create_app(LookupSettings.from_env())
