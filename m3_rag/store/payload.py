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
    """One point's payload; raises before any write if a part cannot be stored as JSON."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, found {type(text).__name__}. Fix: pass the chunk text as a string.")
    if doc_id is not None and not isinstance(doc_id, str):
        raise TypeError(
            f"doc_id {doc_id!r} is a {type(doc_id).__name__}; expected a str or None. Fix: pass str(doc_id)."
        )
    payload = {
        TEXT_KEY: text,
        METADATA_KEY: _json_dict(metadata, "metadata"),
        ID_KEY: user_id,
        DOC_ID_KEY: doc_id,
        EXTRA_KEY: _json_dict(extra, "extra"),
    }
    return payload


def _json_dict(value: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, found {type(value).__name__}. Fix: pass a dict (or None).")
    try:
        # Round-trip so what is stored is exactly what a reader will get back.
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} {dict(value)!r} is not JSON-serialisable ({exc}); expected str/int/float/bool/None, "
            "lists and dicts. Fix: convert the values (e.g. dates to ISO strings) before adding."
        ) from exc
