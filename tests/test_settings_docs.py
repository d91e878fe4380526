"""Every setting is declared once (prescore.env), and the docs' tables are made from it."""

from __future__ import annotations

import pytest

from prescore import env
from prescore.errors import ConfigError
from tests.settings_docs import DOC, TABLES, marked, rendered


def test_the_docs_settings_tables_are_the_declarations() -> None:
    text = DOC.read_text()
    assert sorted(marked(text)) == sorted(TABLES)
    assert rendered(text) == text, "docs/reference.md is behind the settings: run `make docs`"


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_variable_is_declared_once_with_a_doc(name: str) -> None:
    rows = list(env.rows(TABLES[name]))
    variables = [r.env for r in rows]
    assert len(variables) == len(set(variables)), "a variable read twice"
    assert all(r.doc and r.allowed for r in rows)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_each_default_read_back_from_its_variable_is_the_default(name: str) -> None:
    """What the table says of a default is what the variable set to it gives."""
    cls = TABLES[name]
    given = {"core": TABLES["core"]()} if name != "core" else {}
    plain = env.read(cls, {}, **given)
    for row in env.rows(cls):
        if not row.default or row.default.startswith(("<", "cores", "a ", "made", "file://<")):
            continue  # computed where it runs
        said = env.read(cls, {row.env: row.default}, **given)
        assert said == plain, row.env


@pytest.mark.parametrize("name", sorted(TABLES))
def test_a_value_out_of_its_bounds_is_refused_as_the_table_says(name: str) -> None:
    """Each bounded number below its bound: one line naming the variable, with the same
    words as the table's ``allowed``."""
    cls = TABLES[name]
    given = {"core": TABLES["core"]()} if name != "core" else {}
    bounded = [r for r in env.rows(cls) if " of at least " in r.allowed or " from " in r.allowed]
    assert bounded
    for row in bounded:
        low = float(row.allowed.split(" of at least ")[-1].split(" from ")[-1].split(" to ")[0])
        below = str(int(low) - 1 if row.allowed.startswith("an integer") else low - 1)
        with pytest.raises(ConfigError) as refused:
            env.read(cls, {row.env: below}, **given)
        assert str(refused.value) == f"{row.env}={below!r}: must be {row.allowed}"
