"""A small metadata-filter model, backend-neutral; each backend translates it to its Qdrant ``Filter``.

Keys address the user's metadata (``"year"`` -> payload ``metadata.year``; dots nest). The
chunk's own fields are addressed with a ``$``: ``"$text"``, ``"$doc_id"``, ``"$id"``.

Operators: ``eq ne lt lte gt gte in nin text is_empty``, combined with :class:`And`,
:class:`Or`, :class:`Not`. ``ne``/``nin`` also match points that lack the key (as MongoDB's
``$ne``/``$nin`` do). ``text`` is Qdrant's full-text match: case-insensitive, every word of
the value (runs of letters/digits) must be a word of the field, in any order; not a
substring or phrase (Qdrant Edge and local mode agree; a server before 1.19.1 matched an
unindexed field as a case-sensitive substring). Numbers compare as numbers: ``1``
equals a stored ``1.0``. An unknown operator, a value of the wrong type, NaN or infinity, an
integer outside Qdrant's signed 64-bit range, a string that is not valid Unicode, an empty
``in``/``nin`` list, an empty ``And``/``Or`` or nesting deeper than :data:`MAX_FILTER_DEPTH`
raises: nothing ever silently matches everything.

Each backend translates a tree through :func:`build_filter`, one walk for all of them, given
its own :class:`FilterParts` (the Qdrant classes it builds): the translation rules (numeric
equality as a range, ``nin`` as NOT(``in``), ...) are written once.

>>> f = parse_filter({"year": {"$gte": 2020}, "$or": [{"tag": "a"}, {"tag": {"$in": ["b", "c"]}}]})
>>> f
And(items=(Condition(key='year', op='gte', value=2020), Or(items=(Condition(key='tag', op='eq', value='a'), Condition(key='tag', op='in', value=('b', 'c'))))))
>>> Condition("year", "between", 1)
Traceback (most recent call last):
...
ValueError: unknown filter operator 'between' on key 'year'; expected one of eq, ne, lt, lte, gt, gte, in, nin, text, is_empty. Fix: express it with these operators and And/Or/Not.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from m3_rag.store.payload import DOC_ID_KEY, ID_KEY, METADATA_KEY, TEXT_KEY
from m3_rag.validation import short_repr, unicode_problem

__all__ = [
    "OPERATORS",
    "Condition",
    "And",
    "Or",
    "Not",
    "FilterNode",
    "FilterLike",
    "parse_filter",
    "as_filter",
    "payload_key",
    "MAX_FILTER_DEPTH",
    "filter_depth",
    "numeric_bound",
    "FilterParts",
    "FilterClauses",
    "build_filter",
]

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "text", "is_empty")
_TOP_LEVEL = {"$text": TEXT_KEY, "$doc_id": DOC_ID_KEY, "$id": ID_KEY}
_RANGE_OPS = ("lt", "lte", "gt", "gte")
_WORD = re.compile(r"\w")
#: Deepest nesting of And/Or/Not a filter may have: deeper trees are no real query, and they
#: overflow the recursion of the engines that evaluate them.
MAX_FILTER_DEPTH = 32
# Qdrant stores payload integers as signed 64-bit values.
_INT_RANGE = (-(2**63), 2**63 - 1)
# Integers up to this magnitude are exact as float64 (larger ones match as integers only).
_EXACT_FLOAT_INT = 2**53


def payload_key(key: str) -> str:
    """The payload path a filter key addresses.

    >>> payload_key("year"), payload_key("a.b"), payload_key("$doc_id")
    ('metadata.year', 'metadata.a.b', 'doc_id')
    """
    if key.startswith("$"):
        if key not in _TOP_LEVEL:
            raise ValueError(
                f"unknown payload field {key!r}; expected a metadata key or one of {sorted(_TOP_LEVEL)}. "
                "Fix: drop the '$' to address metadata, or use $text/$doc_id/$id."
            )
        return _TOP_LEVEL[key]
    return f"{METADATA_KEY}.{key}"


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, bool))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numeric_bound(value: Any) -> float | None:
    """The value an equality on ``value`` compares numerically with, or None for an exact match.

    Qdrant's ``MatchValue`` matches an int only against stored ints, so equality on a number
    runs as the closed range [v, v], which matches stored ints and floats alike: ``1`` finds a
    stored ``1.0``. Integers beyond 2**53 are not exact as floats and match stored ints only.

    >>> numeric_bound(1), numeric_bound(2.5), numeric_bound("a"), numeric_bound(True), numeric_bound(2**60)
    (1.0, 2.5, None, None, None)
    """
    if isinstance(value, float) or (_number(value) and abs(value) <= _EXACT_FLOAT_INT):
        return float(value)
    return None


def _value_problem(value: Any) -> str | None:
    """Why a well-typed value still cannot be compared exactly, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "a NaN or infinite number, which compares with nothing exactly (NaN bounds matched every point)"
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        return "an integer outside Qdrant's signed 64-bit payload range"
    if isinstance(value, str) and (problem := unicode_problem(value)) is not None:
        return f"a string with {problem}, which is not valid Unicode"
    return None


@dataclass(frozen=True)
class Condition:
    """``key op value``; see the module docstring for keys and operators."""

    key: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(
                f"filter key {short_repr(self.key)} must be a non-empty string. Fix: name a metadata key."
            )
        if (problem := _value_problem(self.key)) is not None:
            raise ValueError(f"filter key {short_repr(self.key)} is {problem}. Fix: use the key as stored.")
        payload_key(self.key)  # validates $-keys
        if self.op not in OPERATORS:
            raise ValueError(
                f"unknown filter operator {self.op!r} on key {self.key!r}; expected one of "
                f"{', '.join(OPERATORS)}. Fix: express it with these operators and And/Or/Not."
            )
        value = self.value
        ok: bool
        if self.op in ("eq", "ne"):
            ok = _scalar(value) or _number(value)
        elif self.op in _RANGE_OPS:
            ok = _number(value) or isinstance(value, (dt.datetime, dt.date))
        elif self.op in ("in", "nin"):
            if isinstance(value, (list, tuple, set, frozenset)):
                items = tuple(value)
                object.__setattr__(self, "value", items)
                kinds = {str if isinstance(v, str) else int if isinstance(v, int) and not isinstance(v, bool) else None for v in items}
                ok = None not in kinds and len(kinds) == 1
            else:
                ok = False
        elif self.op == "text":
            # A text without a word would give the engine no token to match on.
            ok = isinstance(value, str) and _WORD.search(value) is not None
        else:  # is_empty
            ok = isinstance(value, bool)
        if not ok:
            raise ValueError(
                f"filter {short_repr(self.key)} {self.op} got {short_repr(self.value)} ({type(self.value).__name__}); "
                f"expected {_EXPECTED[self.op]}. Fix: pass a value of that type."
            )
        values = self.value if self.op in ("in", "nin") else (self.value,)
        for v in values:
            if (problem := _value_problem(v)) is not None:
                raise ValueError(
                    f"filter {short_repr(self.key)} {self.op} got {short_repr(v)}: {problem}; expected "
                    f"{_EXPECTED[self.op]} that compares exactly. Fix: pass a finite number, an integer "
                    "within +-2**63, or valid text."
                )


_EXPECTED = {
    "eq": "a str, int, float or bool",
    "ne": "a str, int, float or bool",
    "lt": "a number or a datetime",
    "lte": "a number or a datetime",
    "gt": "a number or a datetime",
    "gte": "a number or a datetime",
    "in": "a non-empty list of all-str or all-int values",
    "nin": "a non-empty list of all-str or all-int values",
    "text": "a string with at least one word character",
    "is_empty": "True or False",
}


@dataclass(frozen=True)
class And:
    items: Sequence[FilterNode]  # any sequence in; kept as a tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _children(self.items, "And"))


@dataclass(frozen=True)
class Or:
    items: Sequence[FilterNode]  # any sequence in; kept as a tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _children(self.items, "Or"))


@dataclass(frozen=True)
class Not:
    item: FilterNode

    def __post_init__(self) -> None:
        if not isinstance(self.item, (Condition, And, Or, Not)):
            raise TypeError(f"Not() takes one filter node, found {type(self.item).__name__}.")
        _check_depth(1 + filter_depth(self.item))


FilterNode = Condition | And | Or | Not
FilterLike = FilterNode | Mapping[str, Any] | None


def _children(items: Any, name: str) -> tuple[FilterNode, ...]:
    items = tuple(items)
    if not items:
        raise ValueError(
            f"{name}() with no conditions is ambiguous (all or nothing); expected at least one. "
            "Fix: pass filter=None for no filter."
        )
    for item in items:
        if not isinstance(item, (Condition, And, Or, Not)):
            raise TypeError(f"{name}() items must be filter nodes, found {type(item).__name__}.")
    _check_depth(1 + max(filter_depth(item) for item in items))
    return items


def filter_depth(node: FilterNode) -> int:
    """Levels of And/Or/Not above the deepest condition (a bare condition is 0).

    >>> filter_depth(Not(And([Condition("a", "eq", 1), Or([Condition("b", "eq", 2)])])))
    3
    """
    if isinstance(node, Condition):
        return 0
    children = (node.item,) if isinstance(node, Not) else node.items
    return 1 + max(filter_depth(c) for c in children)  # children were checked when built: bounded


def _check_depth(depth: int) -> None:
    if depth > MAX_FILTER_DEPTH:
        raise ValueError(
            f"the filter nests And/Or/Not {depth} levels deep; expected at most {MAX_FILTER_DEPTH}. "
            "Fix: flatten it (an And of Ands is one And; $in replaces an $or of equalities)."
        )


_MONGO_OPS = {f"${op}": op for op in OPERATORS}


def parse_filter(spec: Mapping[str, Any], _depth: int = 0) -> FilterNode:
    """A MongoDB-style dict (as LangChain users write them) -> the filter model.

    ``{"k": v}`` is ``eq``; ``{"k": {"$op": v, ...}}`` (several ops are ANDed); ``$and``,
    ``$or`` take lists, ``$not`` a dict. Several top-level entries are ANDed.
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"a filter dict was expected, found {type(spec).__name__}.")
    _check_depth(_depth)  # before recursing: a hostile dict must not exhaust the stack
    nodes: list[FilterNode] = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{key} takes a list of filter dicts, found {type(value).__name__}.")
            children = [parse_filter(v, _depth + 1) for v in value]
            nodes.append(And(children) if key == "$and" else Or(children))
        elif key == "$not":
            nodes.append(Not(parse_filter(value, _depth + 1)))
        elif key.startswith("$") and key not in _TOP_LEVEL:
            raise ValueError(
                f"unknown filter operator {key!r} at the top level; expected $and, $or, $not or a key. "
                "Fix: put operators inside a key, e.g. {'year': {'$gte': 2020}}."
            )
        elif isinstance(value, Mapping):
            if not value:
                raise ValueError(f"filter key {key!r} has an empty operator dict; expected e.g. {{'$eq': ...}}.")
            conds: list[FilterNode] = []
            for op, operand in value.items():
                if op not in _MONGO_OPS:
                    raise ValueError(
                        f"unknown filter operator {op!r} on key {key!r}; expected one of "
                        f"{', '.join(_MONGO_OPS)}. Fix: express it with these operators and $and/$or/$not."
                    )
                conds.append(Condition(key, _MONGO_OPS[op], operand))
            nodes.extend(conds)
        else:
            nodes.append(Condition(key, "eq", value))
    if not nodes:
        raise ValueError("an empty filter dict is ambiguous; expected at least one condition. Fix: pass filter=None.")
    return nodes[0] if len(nodes) == 1 else And(nodes)


def as_filter(value: FilterLike) -> FilterNode | None:
    """Normalise a ``filter=`` argument: a node, a Mongo-style dict or ``None``."""
    if value is None or isinstance(value, (Condition, And, Or, Not)):
        return value
    if isinstance(value, Mapping):
        return parse_filter(value)
    raise TypeError(
        f"filter must be a Condition/And/Or/Not, a dict or None; found {type(value).__name__}. "
        "Fix: build it with m3_rag.store.filters or pass a Mongo-style dict."
    )


# -------------------------------------------------------------------------------- translation
class FilterParts(Protocol):
    """One backend's constructors of Qdrant filter parts, for :func:`build_filter`.

    Parts are the backend's own condition objects; its ``Filter`` is one of them, so the
    clause constructors nest. ``bounds`` map range operators (``gte`` ...) to their values.
    """

    def refuse(self, condition: Condition) -> None:
        """Raise for a condition this backend cannot translate faithfully; else return."""

    def is_filter(self, part: Any) -> bool: ...
    def must(self, parts: list[Any]) -> Any: ...
    def should(self, parts: list[Any]) -> Any: ...
    def must_not(self, parts: list[Any]) -> Any: ...
    def match_value(self, key: str, value: str | int | bool) -> Any: ...
    def match_any(self, key: str, values: list[str]) -> Any: ...
    def match_text(self, key: str, text: str) -> Any: ...
    def range_float(self, key: str, bounds: dict[str, float]) -> Any: ...
    def range_datetime(self, key: str, bounds: dict[str, dt.date]) -> Any: ...
    def is_empty(self, key: str) -> Any: ...


class FilterClauses:
    """The backend-neutral half of a :class:`FilterParts`: the clauses, for a backend whose
    ``Filter`` class takes ``must``/``should``/``must_not`` lists (both Qdrant clients' do).
    A backend sets :attr:`filter_class` and adds its field conditions."""

    #: The backend's ``Filter`` class.
    filter_class: type[Any]

    def refuse(self, condition: Condition) -> None:
        """Every condition translates (a backend that cannot match some overrides this)."""

    def is_filter(self, part: Any) -> bool:
        return isinstance(part, self.filter_class)

    def must(self, parts: list[Any]) -> Any:
        return self.filter_class(must=parts)

    def should(self, parts: list[Any]) -> Any:
        return self.filter_class(should=parts)

    def must_not(self, parts: list[Any]) -> Any:
        return self.filter_class(must_not=parts)


def build_filter(node: FilterNode, parts: FilterParts) -> Any:
    """``node`` as the backend's top-level ``Filter``, built from ``parts``.

    The one walk of the filter tree every backend translates through, so they cannot drift
    apart; a bare condition at the top goes into ``must`` (a Filter is what engines take).
    """
    built = _part(node, parts)
    return built if parts.is_filter(built) else parts.must([built])


def _part(node: FilterNode, parts: FilterParts) -> Any:
    if isinstance(node, And):
        return parts.must([_part(c, parts) for c in node.items])
    if isinstance(node, Or):
        return parts.should([_part(c, parts) for c in node.items])
    if isinstance(node, Not):
        return parts.must_not([_part(node.item, parts)])
    if isinstance(node, Condition):
        return _condition_part(node, parts)
    raise TypeError(f"not a filter node: {node!r}")


def _condition_part(c: Condition, parts: FilterParts) -> Any:
    parts.refuse(c)
    key = payload_key(c.key)
    op, v = c.op, c.value
    if op in ("eq", "ne"):
        inner = _equals(key, v, parts)
        # ne as NOT(eq) so it also matches points without the key (MongoDB's $ne).
        return inner if op == "eq" else parts.must_not([inner])
    if op in _RANGE_OPS:
        if isinstance(v, (dt.datetime, dt.date)):
            return parts.range_datetime(key, {op: v})
        return parts.range_float(key, {op: float(v)})
    if op in ("in", "nin"):
        if isinstance(v[0], str):  # Condition made the list all-str or all-int
            inner = parts.match_any(key, list(v))
        else:  # numbers compare as numbers, one equality each (MatchAny would miss stored floats)
            inner = parts.should([_equals(key, x, parts) for x in v])
        # nin as NOT(in) so it also matches points without the key, like `ne`.
        return inner if op == "in" else parts.must_not([inner])
    if op == "text":
        return parts.match_text(key, v)
    if op == "is_empty":
        inner = parts.is_empty(key)
        return inner if v else parts.must_not([inner])
    raise ValueError(f"unknown filter operator {op!r}")  # unreachable: Condition validates


def _equals(key: str, v: Any, parts: FilterParts) -> Any:
    bound = numeric_bound(v)  # see numeric_bound: an exact match would miss 1 vs a stored 1.0
    if bound is not None:
        return parts.range_float(key, {"gte": bound, "lte": bound})
    return parts.match_value(key, v)
