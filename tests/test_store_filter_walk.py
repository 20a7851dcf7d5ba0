"""Both backends translate a filter through the one walk, :func:`m3_rag.store.filters.build_filter`:
each supplies only its Qdrant classes (a ``FilterParts``), so the translation rules (numeric
equality as a range, ``in`` falling back to ``should``, ``nin``/``ne`` as negations, ...)
cannot drift apart between Edge and qdrant-client."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import m3_rag.store.backends.client as client
import m3_rag.store.backends.edge as edge
from m3_rag.store.backends.base import refuse_vacuous_filter
from m3_rag.store.filters import And, Condition, Not, Or, build_filter, parse_filter

_CLAUSES = ("must", "should", "must_not")
_CONSTRUCTORS = (*_CLAUSES, "match_value", "match_any", "match_text", "range_float", "range_datetime", "is_empty")
_WHEN = dt.datetime(2021, 5, 6, 7, 8, 9)

#: Trees both backends translate (Edge refuses booleans, so none here).
TREES = [
    Condition("year", "eq", 2020),
    Condition("score", "eq", 2.5),
    Condition("big", "eq", 2**60),
    Condition("tag", "eq", "a"),
    Condition("tag", "ne", "a"),
    Condition("year", "ne", 3),
    Condition("year", "lt", 2000),
    Condition("when", "gte", _WHEN),
    Condition("day", "lte", dt.date(2020, 1, 2)),
    Condition("tag", "in", ["a", "b"]),
    Condition("year", "in", [1, 2**60]),
    Condition("tag", "nin", ["a"]),
    Condition("year", "nin", [3, 4]),
    Condition("$text", "text", "hello world"),
    Condition("$doc_id", "eq", "d1"),
    Condition("gone", "is_empty", True),
    Condition("kept", "is_empty", False),
    Not(Condition("tag", "eq", "a")),
    Not(Not(Condition("year", "gt", 1))),
    Or([Condition("year", "eq", 1)]),
    parse_filter({"year": {"$gte": 2020}, "$or": [{"tag": "a"}, {"tag": {"$in": ["b", "c"]}}]}),
    And([Or([Condition("a", "is_empty", False), Not(Condition("b", "nin", [1]))]), Condition("c", "text", "x")]),
]


class Recording:
    """A ``FilterParts`` that logs every call the walk makes on it, parts by the index of the
    call that built them, so the logs of different backends compare. With ``inner`` (a
    backend's own parts) it builds through that backend and returns what it built; without,
    it builds tokens, and the log alone is the translation."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.calls: list[tuple[Any, ...]] = []
        self.made: list[Any] = []

    def refuse(self, condition: Condition) -> None:
        self.calls.append(("refuse", condition))
        if self.inner is not None:
            self.inner.refuse(condition)

    def is_filter(self, part: Any) -> bool:
        if self.inner is not None:
            return bool(self.inner.is_filter(part))
        return part[0] in _CLAUSES

    def __getattr__(self, name: str) -> Any:
        if name not in _CONSTRUCTORS:
            raise AttributeError(name)

        def construct(*args: Any) -> Any:
            self.calls.append((name, *(self._logged(a) for a in args)))
            part = getattr(self.inner, name)(*args) if self.inner is not None else (name, len(self.made))
            self.made.append(part)
            return part

        return construct

    def _logged(self, arg: Any) -> Any:
        if isinstance(arg, list) and arg and not isinstance(arg[0], (str, int)):  # parts, not values
            return [next(i for i, m in enumerate(self.made) if m is p) for p in arg]
        return arg


def _recorded(monkeypatch: pytest.MonkeyPatch, module: Any) -> Recording:
    recording = Recording(module._FILTER_PARTS)
    monkeypatch.setattr(module, "_FILTER_PARTS", recording)
    return recording


@pytest.mark.parametrize("tree", TREES, ids=repr)
def test_both_backends_translate_through_the_one_walk(tree, monkeypatch):
    through_client, through_edge = _recorded(monkeypatch, client), _recorded(monkeypatch, edge)
    client_filter, edge_filter = client.to_client_filter(tree), edge.to_edge_filter(tree)
    walked = Recording()
    build_filter(tree, walked)
    assert walked.calls and through_client.calls == walked.calls and through_edge.calls == walked.calls
    # What each backend returns is the walk's last part, nothing built beside it.
    assert client_filter is through_client.made[-1] and edge_filter is through_edge.made[-1]
    for translated in (client_filter, edge_filter):
        refuse_vacuous_filter(translated, "delete_where")  # never a filter that matches everything


def _walk(tree: Any) -> list[tuple[Any, ...]]:
    walked = Recording()
    build_filter(tree, walked)
    return walked.calls


def test_the_walk_s_rules():
    eq1, in_num = Condition("n", "eq", 1), Condition("n", "nin", [1, 2])
    # Numbers match as a closed range (1 finds a stored 1.0); a bare condition goes in must.
    assert _walk(eq1) == [("refuse", eq1), ("range_float", "metadata.n", {"gte": 1.0, "lte": 1.0}), ("must", [0])]
    # Beyond 2**53 a float is not exact: an exact match.
    big = Condition("n", "eq", 2**60)
    assert _walk(big) == [("refuse", big), ("match_value", "metadata.n", 2**60), ("must", [0])]
    # Numeric nin: one equality each, should, then negated (a Filter already: no extra must).
    assert _walk(in_num) == [
        ("refuse", in_num),
        ("range_float", "metadata.n", {"gte": 1.0, "lte": 1.0}),
        ("range_float", "metadata.n", {"gte": 2.0, "lte": 2.0}),
        ("should", [0, 1]),
        ("must_not", [2]),
    ]
    strings = Condition("$doc_id", "in", ["a", "b"])
    assert _walk(strings) == [("refuse", strings), ("match_any", "doc_id", ["a", "b"]), ("must", [0])]
    since = Condition("t", "gt", _WHEN)
    assert _walk(since) == [("refuse", since), ("range_datetime", "metadata.t", {"gt": _WHEN}), ("must", [0])]
    kept = Condition("k", "is_empty", False)
    assert _walk(kept) == [("refuse", kept), ("is_empty", "metadata.k"), ("must_not", [0])]
    ne, text = Condition("s", "ne", "x"), Condition("$text", "text", "a b")
    assert _walk(Or([ne, Not(text)])) == [
        ("refuse", ne),
        ("match_value", "metadata.s", "x"),
        ("must_not", [0]),
        ("refuse", text),
        ("match_text", "text", "a b"),
        ("must_not", [2]),
        ("should", [1, 3]),
    ]


def test_only_edge_refuses_booleans_before_building_anything(monkeypatch):
    flag = Condition("flag", "ne", False)
    through_client, through_edge = _recorded(monkeypatch, client), _recorded(monkeypatch, edge)
    client.to_client_filter(flag)
    with pytest.raises(ValueError, match="boolean"):
        edge.to_edge_filter(flag)
    assert through_edge.calls == [("refuse", flag)]
    assert through_client.calls == [("refuse", flag), ("match_value", "metadata.flag", False), ("must_not", [0])]


def test_a_non_node_is_refused_by_the_walk():
    with pytest.raises(TypeError, match="not a filter node"):
        build_filter({"year": 1}, Recording())
