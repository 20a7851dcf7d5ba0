"""Query plans: the default prefetch sizes (a pure function of k, no store needed)."""

from __future__ import annotations

import pytest

from m3_rag.store.queries import MIN_DEFAULT_PREFETCH, build_plan, rescore_plans
from m3_rag.store.schema import StoreSchema
from test_store_helpers import FakeEncoder

SCHEMA = StoreSchema(outputs=("dense", "sparse", "colbert"), dense_dim=FakeEncoder().dense_dim,
                     colbert_dim=FakeEncoder().colbert_dim)  # fmt: skip


def _query():
    return FakeEncoder().encode_queries(["cats in the park"])


@pytest.mark.parametrize(("k", "expected"), [(1, MIN_DEFAULT_PREFETCH), (4, MIN_DEFAULT_PREFETCH), (10, 10), (25, 25)])
@pytest.mark.parametrize("mode", ["hybrid", "hybrid+rerank"])
def test_default_prefetch_is_max_of_k_and_the_floor(mode, k, expected):
    plan = build_plan(mode, _query(), SCHEMA, k=k)
    assert [p.limit for p in plan.prefetches] == [expected, expected]
    assert plan.limit == k


def test_m3_reranks_the_whole_default_union_and_combines_it_in_the_store():
    plan = build_plan("m3", _query(), SCHEMA, k=4)
    # one ColBERT rerank over the 10 + 10 candidates, all returned, no stored vectors fetched
    assert plan.limit == 2 * MIN_DEFAULT_PREFETCH and plan.query.using == "colbert"
    assert [p.limit for p in plan.prefetches] == [MIN_DEFAULT_PREFETCH] * 2
    assert plan.combine.k == 4 and plan.point_ids is None
    # then exactly the reranked points, scored by dense (exact) and by sparse
    dense, sparse = rescore_plans(plan.combine, [7, "a-uuid"])
    assert (dense.query.using, sparse.query.using) == ("dense", "sparse")
    assert dense.point_ids == sparse.point_ids == (7, "a-uuid") and dense.limit == sparse.limit == 2
    assert dense.exact and not dense.prefetches and dense.filter is None


def test_explicit_prefetch_wins_and_bad_values_raise():
    plan = build_plan("hybrid+rerank", _query(), SCHEMA, k=10, prefetch_k=(3, 7))
    assert [p.limit for p in plan.prefetches] == [3, 7]
    with pytest.raises(ValueError, match="prefetch_k=0; expected a positive int"):
        build_plan("hybrid+rerank", _query(), SCHEMA, k=10, prefetch_k=0)


@pytest.mark.parametrize("bad", [(1.0, -1.0, 0.0), (0, 0, 0), (1.0, 1.0), (1.0, float("nan"), 1.0)])
def test_m3_plan_refuses_bad_weights_with_the_shared_message(bad):
    with pytest.raises(ValueError, match=r"weights is .*expected three finite non-negative numbers.*Fix:"):
        build_plan("m3", _query(), SCHEMA, k=4, weights=bad)
    plan = build_plan("m3", _query(), SCHEMA, k=4, weights=(2, 0, 2))
    assert plan.combine.weights[1] == 0 and plan.combine.weights[0] == pytest.approx(0.5)
