"""Both OpenAPI documents tell the truth: schemathesis generates requests from each (a
bounded number, a fixed seed) against the real app, and every answer must be no 5xx,
conform to its documented schema, and have a documented status. Real Redis, real models."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings

from prescore.settings import Settings
from tests import domains
from tests.helpers import registered, served_catalog, with_catalog
from tests.lookup_helpers import colours_payload, publish, publish_customers

EXAMPLES = 25
CHECKS = dict(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def _run(app: Any, excluded: tuple[Any, ...] = ()) -> list[str]:
    """Every operation of ``app``'s /openapi.json, ``EXAMPLES`` cases each; the failures."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    failures: list[str] = []
    ran: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        with contextlib.suppress(Exception):  # each failure is recorded by the check
            _check(operation, ran, failures, excluded)()
    assert ran and all(n >= 1 for n in ran.values()), ran  # every operation was exercised
    assert max(ran.values()) >= EXAMPLES // 2, ran  # the ones taking input, many times
    return failures


def _check(
    operation: Any, ran: dict[str, int], failures: list[str], excluded: tuple[Any, ...]
) -> Any:
    """A hypothesis test of one operation, counting its cases, recording its failures."""
    label = operation.label

    @settings(**CHECKS)  # type: ignore[arg-type]
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        # schemathesis unquotes a path or query value before it quotes it (quote_all), so
        # a key holding a literal "%08" goes out as a control character, a key the
        # document itself refuses: such a case tests schemathesis, not the document
        given = [*(case.path_parameters or {}).values(), *(case.query or {}).values()]
        sent = "".join(unquote(str(v)) for v in given)
        assume(not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in sent))
        ran[label] = ran.get(label, 0) + 1
        try:
            case.call_and_validate(excluded_checks=list(excluded))
        except Exception as exc:
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:400]}")
            raise

    return check


def test_the_lookup_document(settings: Settings, rclient, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from lookup.app import create_app
    from lookup.settings import LookupSettings

    s = dataclasses.replace(settings, catalog=served_catalog(tmp_path))
    publish_customers(rclient, s, customers=5)
    publish(rclient, s, "colours", [("i1", colours_payload("i1", [("blue", 0.9)], "1"))], "1")
    app = create_app(LookupSettings(core=s, pointer_cache_s=0))
    assert _run(app) == []


@pytest.fixture()
def fallback_app(
    settings: Settings, shop: dict[str, Path], colours: dict[str, Any], tmp_path: Path
):  # type: ignore[no-untyped-def]
    from fallback.app import create_app
    from fallback.settings import FallbackSettings

    config = tmp_path / "prescore.toml"
    domains.shop_config(shop["tables"], config)
    colours_toml = domains.colours_config(colours["images"], tmp_path / "c.toml").read_text()
    config.write_text(config.read_text() + colours_toml)
    s = with_catalog(settings, config)
    registered(s, "shop-model", shop["factored"])
    registered(s, "colour-tagger", colours["model"])
    return create_app(FallbackSettings(core=s, runtime="tf"), watch=False)


def test_the_fallback_document(fallback_app) -> None:  # type: ignore[no-untyped-def]
    """Every check but "a schema-valid request is accepted": whether bytes are an image
    (``b64``) or posted features fit the model is no JSON Schema's to say; those are
    400s, and no answer may be a 5xx or fail its documented schema."""
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    assert _run(fallback_app, (positive_data_acceptance,)) == []
