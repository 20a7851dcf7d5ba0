"""Checks on caller-supplied text, shared by the encoder and the store (texts, ids, metadata strings).

Messages quote values through :func:`short_repr`, so a huge or hostile value is never echoed whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["REPR_LIMIT", "short_repr", "unicode_problem", "check_text", "check_texts", "as_list"]

REPR_LIMIT = 80  # characters of a value quoted in an error message


def short_repr(value: object, limit: int = REPR_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters (with its full length when cut).

    >>> short_repr("x" * 1000)[-24:]
    'xxx... (1002 characters)'
    """
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not replace the real error
        return f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def unicode_problem(text: str) -> str | None:
    """What makes ``text`` impossible to encode as UTF-8 (a lone surrogate, and where), or None.

    >>> unicode_problem("a\\ud800b")
    "a lone surrogate '\\\\ud800' at position 1"
    >>> unicode_problem("café") is None
    True
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate {text[exc.start]!r} at position {exc.start}"
    return None


def check_text(value: object, what: str) -> str:
    """``value`` if it is a str encodable as UTF-8; else TypeError (not a str) or ValueError (a lone surrogate).

    ``what`` names the value in the message, e.g. ``"texts[3]"`` or ``"metadata['title']"``.

    >>> check_text("a\\ud800b", "texts[2]")
    Traceback (most recent call last):
    ...
    ValueError: texts[2] has a lone surrogate '\\ud800' at position 1, which is not valid Unicode (it cannot be encoded as UTF-8); expected valid Unicode text. Fix: clean it first, e.g. text.encode('utf-8', 'replace').decode().
    """
    if not isinstance(value, str):
        raise TypeError(
            f"{what} is {type(value).__name__} ({short_repr(value)}); expected str. Fix: pass text as str (decode bytes first)."
        )
    if (problem := unicode_problem(value)) is not None:
        raise ValueError(
            f"{what} has {problem}, which is not valid Unicode (it cannot be encoded as UTF-8); expected valid "
            "Unicode text. Fix: clean it first, e.g. text.encode('utf-8', 'replace').decode()."
        )
    return value


def check_texts(texts: Iterable[object], what: str = "texts") -> list[str]:
    """``texts`` as a list of checked strings (:func:`check_text` on each, named ``what[i]``).

    A single str, bytes or None is refused: iterating it would give characters, ints or nothing.
    """
    if isinstance(texts, (str, bytes, bytearray)) or texts is None:
        kind = "a single string" if isinstance(texts, str) else type(texts).__name__
        raise TypeError(f"{what} is {kind} ({short_repr(texts)}); expected a list of strings. Fix: pass [text].")
    try:
        items = list(texts)
    except TypeError:
        raise TypeError(
            f"{what} is {type(texts).__name__} ({short_repr(texts)}); expected a list of strings. Fix: pass [text]."
        ) from None
    return [check_text(text, f"{what}[{i}]") for i, text in enumerate(items)]


def as_list(value: Any, name: str, items: str) -> list:
    """``value`` (any iterable) as a list. A lone str or bytes, a dict or a record (a pydantic
    model such as a LangChain ``Document`` or a LlamaIndex node) is refused: all are iterable,
    and iterating them would silently act on each character, key or field.

    >>> as_list(("a", "b"), "ids", "ids")
    ['a', 'b']
    >>> as_list("d1", "ids", "ids")
    Traceback (most recent call last):
    ...
    TypeError: ids must be a list of ids; found a single str: 'd1'. Fix: pass ['d1'].
    """
    from pydantic import BaseModel  # a qdrant-client dependency; adapters' records are its models

    if isinstance(value, (str, bytes, bytearray, Mapping, BaseModel)) or not isinstance(value, Iterable):
        shown = short_repr(value)
        raise TypeError(
            f"{name} must be a list of {items}; found a single {type(value).__name__}: {shown}. Fix: pass [{shown}]."
        )
    return list(value)
