"""The canonical text of a package document: exactly PostgreSQL's ``jsonb::text`` rendering.

The database is the authority: ``ingest_package`` parses the document into ``jsonb`` and
hashes ``convert_to(doc::text, 'UTF8')``. This module reproduces that rendering in Python so a
client can know a package's ``data_hash`` without a round trip (tests compare the two):

* objects: keys ordered by byte length, then bytewise; ``{"k": v, ...}`` with ``", "`` / ``": "``;
* numbers: PostgreSQL ``numeric`` output of the number's text, i.e. plain decimal notation
  (``1e-07`` becomes ``0.0000001``, ``1e+16`` becomes ``10000000000000000``); floats are
  written with Python's shortest round-trip ``repr`` first, so decoding is bit-exact;
* strings: ``"`` and ``\\`` escaped, ``\\b \\f \\n \\r \\t``, other control characters as
  ``\\u00xx``; everything else (non-ASCII included) written as UTF-8.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

# How non-finite floats travel in a document (JSON has no literal for them).
NON_FINITE = ("NaN", "Infinity", "-Infinity")
_EXPONENT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?e[-+][0-9]+")


def _plain_decimal(match: re.Match) -> str:
    return format(Decimal(match.group(0)), "f")


def number_text(value: float | int) -> str:
    """A number as PostgreSQL ``numeric`` prints it after parsing Python's ``repr``."""
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers here")
    if isinstance(value, int):
        return str(value)
    if value == 0.0:
        return "0.0"  # numeric has no negative zero
    return _EXPONENT.sub(_plain_decimal, repr(float(value)))


def string_text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def float_list_text(values: list) -> str:
    """A flat list of floats and non-finite tokens ("NaN", ...), rendered fast via ``json.dumps``."""
    text = json.dumps(values, ensure_ascii=False)
    text = text.replace("-0.0,", "0.0,").replace("-0.0]", "0.0]")
    return _EXPONENT.sub(_plain_decimal, text)


def _key_order(key: str) -> tuple[int, bytes]:
    raw = key.encode()
    return len(raw), raw


def render(value: Any) -> str:
    """Canonical text of a JSON-ready value (dict / list / str / int / float / bool / None)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return number_text(value)
    if isinstance(value, str):
        return string_text(value)
    if isinstance(value, dict):
        items = (f"{string_text(k)}: {render(value[k])}" for k in sorted(value, key=_key_order))
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        if value and all(type(v) is float or v in NON_FINITE for v in value):
            return float_list_text(value)
        return "[" + ", ".join(render(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} canonically")
