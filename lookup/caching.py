"""HTTP validators of a lookup's answer: its ``ETag`` and ``Cache-Control``, and the 304
of a conditional GET.

An answer is fixed by what is stored for its key in the version that served it (a
published version never changes; a write-back or a refresh changes what is stored, and
so the answer), except its ``age_s``. So its ETag is a hash of the body with the age left
out, weak (``W/``) because the bodies it stands for still differ in their age. A client
that sends it back in ``If-None-Match`` gets 304 with no body while the answer is the
same; the lookup still reads Redis to know that, so a 304 saves the bytes, not the read.
``Cache-Control`` is ``no-cache`` (a cache asks again each time: the next version can go
live at any moment), or ``max-age=N`` where ``LOOKUP_CACHE_MAX_AGE_S`` allows answers up
to N seconds behind a switch.
"""

from __future__ import annotations

import hashlib
import re

from lookup.params import CANARY_HEADER

# the envelope's age, right after its source and version (lookup.render), never a
# payload's own field of that name
_AGE = re.compile(rb'^(\{"source":"[a-z_]+","dataset_version":"[^"]*"),"age_s":\d+')


def etag(body: bytes) -> str:
    """The weak ETag of a 200 answer's ``body``."""
    digest = hashlib.blake2b(_AGE.sub(rb"\1", body, count=1), digest_size=12).hexdigest()
    return f'W/"{digest}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``tag`` (weak comparison, RFC 9110
    13.1.2: ``W/`` prefixes aside), or is ``*``."""
    if not if_none_match:
        return False
    opaque = tag.removeprefix("W/")
    return any(
        given.strip() == "*" or given.strip().removeprefix("W/") == opaque
        for given in if_none_match.split(",")
    )


def cache_control(max_age_s: int) -> str:
    return f"max-age={max_age_s}" if max_age_s > 0 else "no-cache"


def validated(
    status: int, body: bytes, if_none_match: str | None, max_age_s: int
) -> tuple[int, bytes, list[tuple[str, str]]]:
    """(status, body, headers) of a single lookup's answer: a 200 with its validators,
    or 304 with none of its body when the client holds it already; others as they are."""
    if status != 200:
        return status, body, []
    tag = etag(body)
    # the canary header can change the answer (lookup.params.pick): caches key on it
    headers = [
        ("ETag", tag),
        ("Cache-Control", cache_control(max_age_s)),
        ("Vary", CANARY_HEADER),
    ]
    if matches(if_none_match, tag):
        return 304, b"", headers
    return status, body, headers
