"""docs/reference.md's settings tables, made from the settings' declarations
(prescore.env): ``make docs`` writes them, tests/test_settings_docs.py checks them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fallback.settings import FallbackSettings
from lookup.settings import LookupSettings
from prescore import env
from prescore.settings import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "reference.md"
TABLES = {"core": Settings, "lookup": LookupSettings, "fallback": FallbackSettings}
_BLOCK = re.compile(r"(<!-- settings: (\w+) -->\n).*?(<!-- /settings -->)", re.S)


def rendered(text: str) -> str:
    """``text`` with each marked table made again from its class."""
    return _BLOCK.sub(lambda m: m[1] + env.markdown(env.rows(TABLES[m[2]])) + m[3], text)


def marked(text: str) -> list[str]:
    return [m[2] for m in _BLOCK.finditer(text)]


if __name__ == "__main__":
    DOC.write_text(rendered(DOC.read_text()))
    sys.exit(0)
