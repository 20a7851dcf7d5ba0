"""The payload layout, defined once and shared by the store and both framework adapters.

| key        | what                                                            |
|------------|-----------------------------------------------------------------|
| ``text``     | the chunk text                                                  |
| ``metadata`` | the user's metadata dict (filters address ``metadata.<key>``)   |
| ``id``       | the caller's original id (str or int)                           |
| ``doc_id``   | the source document id (LlamaIndex ``ref_doc_id``), indexed      |
| ``extra``    | adapter-private data; other readers ignore it                   |

Every key is always written (``doc_id`` may be null, ``metadata``/``extra`` may be empty),
so a reader never has to guess whether a key is missing or empty.

>>> p = build_payload("hi", {"year": 2020}, "a1", None, None)
>>> sorted(p), p["metadata"], p["doc_id"]
(['doc_id', 'extra', 'id', 'metadata', 'text'], {'year': 2020}, None)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from m3_rag.store.ids import UserId
from m3_rag.validation import check_text, short_repr

__all__ = [
    "TEXT_KEY",
    "METADATA_KEY",
    "ID_KEY",
    "DOC_ID_KEY",
    "EXTRA_KEY",
    "PAYLOAD_KEYS",
    "build_payload",
]

TEXT_KEY = "text"
METADATA_KEY = "metadata"
ID_KEY = "id"
DOC_ID_KEY = "doc_id"
EXTRA_KEY = "extra"
PAYLOAD_KEYS = (TEXT_KEY, METADATA_KEY, ID_KEY, DOC_ID_KEY, EXTRA_KEY)


def build_payload(
    text: str,
    metadata: Mapping[str, Any] | None,
    user_id: UserId,
    doc_id: str | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One point's payload; raises before any write if a part cannot be stored and read back
    exactly (and, for metadata, filtered on)."""
    if not isinstance(text, str):
        raise TypeError(
            f"text must be a str, found {type(text).__name__} {short_repr(text)}. Fix: pass the chunk text as a string."
        )
    check_text(text, "the text")
    if doc_id is not None:
        if not isinstance(doc_id, str):
            raise TypeError(
                f"doc_id {short_repr(doc_id)} is a {type(doc_id).__name__}; expected a str or None. Fix: pass str(doc_id)."
            )
        check_text(doc_id, "doc_id")
    return {
        TEXT_KEY: text,
        METADATA_KEY: _json_dict(metadata, "metadata", filterable=True),
        ID_KEY: user_id,
        DOC_ID_KEY: doc_id,
        EXTRA_KEY: _json_dict(extra, "extra", filterable=False),
    }


#: Deepest nesting of dicts/lists a payload may have (deeper ones overflow JSON encoders).
MAX_PAYLOAD_DEPTH = 32
# Qdrant stores payload integers as signed 64 bits; larger ones would come back as floats.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
# Filter keys read these as path syntax (nesting, arrays), so a key holding one cannot be filtered.
_PATH_CHARS = frozenset('.[]"')


def _check_value(value: Any, where: str, filterable: bool, depth: int = 0) -> None:
    """Raise unless ``value`` reads back from Qdrant's JSON payload exactly as given."""
    if depth > MAX_PAYLOAD_DEPTH:
        raise ValueError(f"{where} nests deeper than {MAX_PAYLOAD_DEPTH} levels. Fix: flatten it.")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where} has the key {short_repr(key)} ({type(key).__name__}); expected str keys "
                    f"(JSON would turn it into {str(key)!r}, which can collide with another key). Fix: use str keys."
                )
            check_text(key, f"{where} key")
            if filterable and (not key or _PATH_CHARS & set(key) or (depth == 0 and key.startswith("$"))):
                raise ValueError(
                    f"{where} key {key!r} cannot be filtered on: filter keys read '.', '[', ']' and '\"' as "
                    "path syntax and '$' at the top as a chunk field; expected a plain non-empty key. "
                    "Fix: rename it, or nest it ({'a': {'b': 5}} is filtered as 'a.b')."
                )
            _check_value(item, f"{where}[{key!r}]", filterable, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", filterable, depth + 1)
    elif isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(
            f"{where} is the integer {short_repr(value)}, outside Qdrant's signed 64-bit range (it would come "
            "back as a float). Fix: store it as a string."
        )


def _json_dict(value: Mapping[str, Any] | None, what: str, *, filterable: bool) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, found {type(value).__name__}. Fix: pass a dict (or None).")
    _check_value(value, what, filterable)
    try:
        # Round-trip so what is stored is exactly what a reader will get back.
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} {short_repr(dict(value))} is not JSON-serialisable ({exc}); expected str/int/float/bool/None, "
            "finite numbers, lists and dicts. Fix: convert the values (e.g. dates to ISO strings) before adding."
        ) from exc
