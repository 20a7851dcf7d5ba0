"""LlamaIndex ``MetadataFilters`` -> the core filter model (``m3_rag.store.filters``).

Every operator maps to what Qdrant evaluates natively, with Qdrant's array semantics (a
condition on a list-valued field matches when any element matches):

=======================================  ==========================================
LlamaIndex                               core
=======================================  ==========================================
EQ NE GT GTE LT LTE                      eq ne gt gte lt lte (values passed as given)
IN NIN                                   in nin
ANY (list contains any of)               in
CONTAINS (list contains x)               eq
ALL (list contains all of)               And(eq, eq, ...)
TEXT_MATCH, TEXT_MATCH_INSENSITIVE       text (Qdrant ``MatchText``)
IS_EMPTY                                 is_empty
=======================================  ==========================================

What they match, measured on both backends (Qdrant Edge and qdrant-client local mode agree;
tests/test_hardening_adapters.py):

- TEXT_MATCH and TEXT_MATCH_INSENSITIVE are the same **case-insensitive word match**, as in
  LlamaIndex's own Qdrant store: both sides are split into words (runs of letters and
  digits, lower-cased; punctuation separates) and a field matches when it contains every
  word of the value, in any order. Not a substring (``"ell"`` does not match ``"hello"``)
  and not a phrase (``"world hello"`` matches ``"Hello, world!"``); accents are kept
  (``"héllo"`` does not match ``"hello"``). A Qdrant server before 1.19.1 compared an
  unindexed field as a case-sensitive substring instead (qdrant/qdrant#10341).
- CONTAINS is an exact, case-sensitive equality with the field, or with any element of a
  list field: on a plain string field it is ``==``, not a substring (``"a"`` does not match
  ``"ab"``).
- IS_EMPTY matches a missing key, ``None`` and ``[]``, as LlamaIndex defines it; ``""``,
  ``{}`` and ``[None]`` are values, not empty.

Keys address the node's metadata (``metadata.<key>`` in the payload), as the core model
does; ``$doc_id`` and ``$id`` address the shared top-level fields.

Conditions: AND -> ``And``, OR -> ``Or``, NOT -> ``Not(Or(...))`` (LlamaIndex's NOT matches
when none of its filters match), nested ``MetadataFilters`` recursively.
"""

from __future__ import annotations

from llama_index.core.vector_stores.types import (
    ExactMatchFilter,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from m3_rag.store.filters import And, Condition, FilterNode, Not, Or

__all__ = ["UnsupportedFilterError", "SUPPORTED_OPERATORS", "to_core_filter"]

_DIRECT = {
    FilterOperator.EQ: "eq",
    FilterOperator.NE: "ne",
    FilterOperator.GT: "gt",
    FilterOperator.GTE: "gte",
    FilterOperator.LT: "lt",
    FilterOperator.LTE: "lte",
    FilterOperator.IN: "in",
    FilterOperator.NIN: "nin",
    FilterOperator.ANY: "in",
    FilterOperator.CONTAINS: "eq",
    FilterOperator.TEXT_MATCH: "text",
    # Qdrant's text match is case-insensitive already (see the module docstring).
    FilterOperator.TEXT_MATCH_INSENSITIVE: "text",
}
SUPPORTED_OPERATORS = frozenset(_DIRECT) | {FilterOperator.ALL, FilterOperator.IS_EMPTY}
_LIST_OPERATORS = {FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL}


class UnsupportedFilterError(ValueError):
    """A LlamaIndex filter the store cannot evaluate exactly (raised instead of matching all)."""


def to_core_filter(filters: MetadataFilters | None) -> FilterNode | None:
    """Translate LlamaIndex filters; ``None`` or an empty filter list means no filter.

    >>> from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
    >>> f = MetadataFilters(filters=[MetadataFilter(key="year", value=2020, operator=">=")])
    >>> to_core_filter(f) is not None
    True
    """
    if filters is None or not filters.filters:
        return None
    return _translate_group(filters)


def _translate_group(group: MetadataFilters) -> FilterNode:
    if not group.filters:
        raise UnsupportedFilterError(
            "found an empty nested MetadataFilters; expected at least one filter in every group. "
            "Fix: remove the empty group."
        )
    parts = [_translate_group(f) if isinstance(f, MetadataFilters) else _translate_one(f) for f in group.filters]
    condition = group.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else And(parts)
    if condition == FilterCondition.OR:
        return parts[0] if len(parts) == 1 else Or(parts)
    if condition == FilterCondition.NOT:
        return Not(parts[0] if len(parts) == 1 else Or(parts))
    raise UnsupportedFilterError(
        f"found filter condition {condition!r}; expected one of {[c.value for c in FilterCondition]}."
    )


def _translate_one(f: MetadataFilter | ExactMatchFilter) -> FilterNode:
    op = getattr(f, "operator", FilterOperator.EQ)  # ExactMatchFilter has no operator: EQ
    if op not in SUPPORTED_OPERATORS:
        raise UnsupportedFilterError(
            f"filter on {f.key!r} uses operator {op.value!r}, which the m3 store cannot evaluate "
            f"exactly; supported: {sorted(o.value for o in SUPPORTED_OPERATORS)}. "
            "Fix: rewrite the filter with a supported operator."
        )
    if op == FilterOperator.IS_EMPTY:
        return Condition(f.key, "is_empty", True)
    value = f.value
    if value is None:
        raise UnsupportedFilterError(
            f"filter on {f.key!r} with operator {op.value!r} has value None; expected a value. "
            "Fix: use FilterOperator.IS_EMPTY to match a missing or empty field."
        )
    is_list = isinstance(value, list)
    if (op in _LIST_OPERATORS) != is_list:
        want = "a list" if op in _LIST_OPERATORS else "a single value"
        raise UnsupportedFilterError(
            f"filter on {f.key!r} with operator {op.value!r} has value {value!r}; expected {want}."
        )
    if op == FilterOperator.ALL and isinstance(value, list):  # a list: checked just above
        if not value:
            # "contains all of nothing" would match every point: refuse rather than guess.
            raise UnsupportedFilterError(
                f"filter on {f.key!r} with operator 'all' has an empty list; expected at least "
                "one value. Fix: drop the filter or give the values the field must contain."
            )
        conds: list[FilterNode] = [Condition(f.key, "eq", v) for v in value]
        return conds[0] if len(conds) == 1 else And(conds)
    # The value as given: the core compares numbers as numbers (EQ 1 matches a stored 1.0).
    return Condition(f.key, _DIRECT[op], value)
