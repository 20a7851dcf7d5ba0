"""LlamaIndex MetadataFilters -> core filter model (translation only; store semantics are
exercised against both backends in test_llamaindex_store.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.vector_stores.types import (  # noqa: E402
    ExactMatchFilter,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from m3_rag.store.filters import And, Condition, Not, Or  # noqa: E402
from m3_rag_llamaindex.filters import SUPPORTED_OPERATORS, UnsupportedFilterError, to_core_filter  # noqa: E402


def F(key, value, op="=="):  # noqa: N802
    return MetadataFilter(key=key, value=value, operator=op)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (F("a", 1), Condition("a", "eq", 1)),
        (F("a", "x", "!="), Condition("a", "ne", "x")),
        (F("a", 1, ">"), Condition("a", "gt", 1)),
        (F("a", 1.5, ">="), Condition("a", "gte", 1.5)),
        (F("a", 1, "<"), Condition("a", "lt", 1)),
        (F("a", 1, "<="), Condition("a", "lte", 1)),
        (F("a", ["x", "y"], "in"), Condition("a", "in", ("x", "y"))),
        (F("a", [1, 2], "nin"), Condition("a", "nin", (1, 2))),
        (F("tags", ["x", "y"], "any"), Condition("tags", "in", ("x", "y"))),
        (F("tags", "x", "contains"), Condition("tags", "eq", "x")),
        (F("tags", ["x", "y"], "all"), And((Condition("tags", "eq", "x"), Condition("tags", "eq", "y")))),
        (F("tags", ["x"], "all"), Condition("tags", "eq", "x")),
        (F("title", "word", "text_match"), Condition("title", "text", "word")),
        # Qdrant's text match ignores case: the insensitive operator is the same match.
        (F("title", "Word", "text_match_insensitive"), Condition("title", "text", "Word")),
        (F("tags", None, "is_empty"), Condition("tags", "is_empty", True)),
    ],
    ids=lambda v: getattr(v, "operator", "") if isinstance(v, MetadataFilter) else "",
)
def test_each_operator(flt, expected) -> None:
    assert to_core_filter(MetadataFilters(filters=[flt])) == expected


def test_every_operator_is_either_supported_or_refused() -> None:
    for op in FilterOperator:
        if op == FilterOperator.IS_EMPTY:
            value = None
        elif op in ("in", "nin", "any", "all"):
            value = ["v"]
        else:
            value = "v" if op.value.startswith("text") else 1
        flt = MetadataFilters(filters=[F("k", value, op)])
        if op in SUPPORTED_OPERATORS:
            assert to_core_filter(flt) is not None
        else:
            with pytest.raises(UnsupportedFilterError, match=op.value):
                to_core_filter(flt)


def test_conditions_and_nesting() -> None:
    a, b, c = F("a", 1), F("b", 2), F("c", 3)
    ca, cb, cc = Condition("a", "eq", 1), Condition("b", "eq", 2), Condition("c", "eq", 3)
    assert to_core_filter(MetadataFilters(filters=[a, b])) == And((ca, cb))
    assert to_core_filter(MetadataFilters(filters=[a, b], condition="or")) == Or((ca, cb))
    # LlamaIndex's NOT matches when none of its filters match.
    assert to_core_filter(MetadataFilters(filters=[a, b], condition="not")) == Not(Or((ca, cb)))
    assert to_core_filter(MetadataFilters(filters=[a], condition="not")) == Not(ca)
    nested = MetadataFilters(
        filters=[a, MetadataFilters(filters=[b, MetadataFilters(filters=[c], condition="not")], condition="or")],
        condition=FilterCondition.AND,
    )
    assert to_core_filter(nested) == And((ca, Or((cb, Not(cc)))))
    # ExactMatchFilter (the legacy form) is EQ.
    assert to_core_filter(MetadataFilters(filters=[ExactMatchFilter(key="a", value=1)])) == ca


def test_no_filter() -> None:
    assert to_core_filter(None) is None
    assert to_core_filter(MetadataFilters(filters=[])) is None


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        (F("a", None), "value None"),
        (F("a", "x", "in"), "expected a list"),
        (F("a", ["x"], ">"), "expected a single value"),
        (F("tags", [], "all"), "empty list"),
        (MetadataFilters(filters=[]), "empty nested"),
    ],
)
def test_inexpressible_filters_raise(flt, message) -> None:
    with pytest.raises(UnsupportedFilterError, match=message):
        to_core_filter(MetadataFilters(filters=[F("z", 0), flt]))


def test_core_type_checks_still_apply() -> None:
    # Qdrant matches lists of keywords or ints only; the core model says so.
    with pytest.raises(ValueError, match="all-str or all-int"):
        to_core_filter(MetadataFilters(filters=[F("a", [1.5, 2.5], "in")]))
