"""Training data in BGE-M3's fine-tuning format: one JSON object per line.

``{"query": str, "pos": [str, ...], "neg": [str, ...]}``, optionally with teacher scores
``"pos_scores": [float, ...]`` and ``"neg_scores": [float, ...]`` (one per passage). Other keys
(ids, for instance) are kept out of the way. A bad row raises with its line number.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

__all__ = ["TrainExample", "DataError", "iter_rows", "load_rows", "load_jsonl", "parse_example"]


class DataError(ValueError):
    """A training row that does not follow the format; the message names the file and line."""


@dataclass(frozen=True)
class TrainExample:
    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...]
    pos_scores: tuple[float, ...] | None = None
    neg_scores: tuple[float, ...] | None = None

    @property
    def has_teacher(self) -> bool:
        return self.pos_scores is not None


def _strings(value: object, key: str, where: str, *, allow_empty: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: {key!r} is {type(value).__name__}, expected a list of strings")
    if not value and not allow_empty:
        raise DataError(f"{where}: {key!r} is empty, expected at least one passage")
    if any(not v.strip() for v in value):
        raise DataError(f"{where}: {key!r} holds an empty string, expected passage text")
    return tuple(value)


def _scores(row: dict, key: str, n: int, where: str) -> tuple[float, ...] | None:
    if key not in row:
        return None
    value = row[key]
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise DataError(f"{where}: {key!r} is {value!r:.60}, expected a list of numbers")
    if len(value) != n:
        passages = key.removesuffix("_scores")
        raise DataError(f"{where}: {key!r} has {len(value)} scores but {passages!r} has {n} passages; give one each")
    return tuple(float(v) for v in value)


def parse_example(row: object, where: str = "row") -> TrainExample:
    """Validate one decoded row; ``where`` prefixes error messages (e.g. ``"data.jsonl:12"``).

    >>> parse_example({"query": "q", "pos": ["a"], "neg": ["b", "c"]}).neg
    ('b', 'c')
    >>> parse_example({"query": "q", "pos": []}, "f.jsonl:3")
    Traceback (most recent call last):
    ...
    m3_rag.train.data.DataError: f.jsonl:3: 'pos' is empty, expected at least one passage
    """
    if not isinstance(row, dict):
        raise DataError(f"{where}: found a JSON {type(row).__name__}, expected an object with 'query', 'pos', 'neg'")
    if not isinstance(row.get("query"), str) or not row["query"].strip():
        raise DataError(f"{where}: 'query' is {row.get('query')!r:.60}, expected a non-empty string")
    if "pos" not in row:
        raise DataError(f"{where}: no 'pos' key, expected 'pos': [positive passage, ...]")
    pos = _strings(row["pos"], "pos", where, allow_empty=False)
    neg = _strings(row.get("neg", []), "neg", where, allow_empty=True)
    pos_scores = _scores(row, "pos_scores", len(pos), where)
    neg_scores = _scores(row, "neg_scores", len(neg), where)
    if (pos_scores is None) != (neg_scores is None):
        raise DataError(f"{where}: teacher scores need both 'pos_scores' and 'neg_scores'; found only one")
    return TrainExample(row["query"], pos, neg, pos_scores, neg_scores)


def iter_rows(path: str | Path) -> Iterator[tuple[str, object]]:
    """``(where, decoded row)`` per non-blank line, ``where`` being ``"file:line"``; a line that is
    not JSON raises :class:`DataError` naming it. Rows keep every key (ids too): validate them
    with :func:`parse_example`."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            yield where, row


def load_rows(path: str | Path) -> list[tuple[str, dict]]:
    """``(where, row)`` for every row, each checked with :func:`parse_example` but kept as the
    decoded dict (ids and any other key intact), for tools that rewrite rows."""
    checked: list[tuple[str, dict]] = []
    for where, row in iter_rows(path):
        parse_example(row, where)  # raises unless the row is a JSON object of a valid example
        checked.append((where, cast(dict, row)))
    return checked


def iter_jsonl(path: str | Path) -> Iterator[TrainExample]:
    for where, row in iter_rows(path):
        yield parse_example(row, where)


def load_jsonl(path: str | Path) -> list[TrainExample]:
    """All examples of a jsonl file; raises :class:`DataError` naming the first bad line.

    Teacher scores must be present in every row or in none (one loss for the whole run).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training data {path} not found; expected a jsonl file of query/pos/neg rows")
    rows = list(iter_jsonl(path))
    if not rows:
        raise DataError(f"{path}: no rows; expected at least one query/pos/neg object")
    with_teacher = [r.has_teacher for r in rows]
    if any(with_teacher) and not all(with_teacher):
        first = with_teacher.index(not with_teacher[0]) + 1
        raise DataError(
            f"{path}: row {first} {'has' if with_teacher[first - 1] else 'lacks'} teacher scores unlike row 1; "
            "give 'pos_scores'/'neg_scores' in every row or in none"
        )
    return rows
