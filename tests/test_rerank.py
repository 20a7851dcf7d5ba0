"""m3_rag.rerank: the rerankers' scores and order, computed once in the core for both adapters."""

from __future__ import annotations

import numpy as np
import pytest

from m3_rag.rerank import rerank, rerank_scores
from m3_rag.scoring import combine_scores, dense_scores, lexical_scores, maxsim_scores

QUERY = "where do cats sleep"
TEXTS = ["cats sleep on the mat", "dogs bark at night", "the cat sleeps all day", "cats sleep on the mat"]


def test_scores_are_bge_m3s(tiny_encoder) -> None:
    q = tiny_encoder.encode_queries([QUERY])
    d = tiny_encoder.encode_documents(TEXTS)
    colbert = maxsim_scores(q.colbert[0], d.colbert)
    np.testing.assert_allclose(rerank_scores(tiny_encoder, QUERY, TEXTS), colbert, rtol=1e-5)
    parts = (dense_scores(q.dense[0], d.dense), lexical_scores(q.sparse[0], d.sparse), colbert)
    for weights, want in ((None, tiny_encoder.config.default_weights), ((1.0, 0.0, 2.0), (1.0, 0.0, 2.0))):
        got = rerank_scores(tiny_encoder, QUERY, TEXTS, "m3", weights)
        np.testing.assert_allclose(got, combine_scores(*parts, weights=want), rtol=1e-5)


def test_order_top_n_and_ties(tiny_encoder) -> None:
    scores = rerank_scores(tiny_encoder, QUERY, TEXTS)
    ranked = rerank(tiny_encoder, QUERY, TEXTS)
    assert [s for _, s in ranked] == sorted(scores.tolist(), reverse=True)
    assert sorted(i for i, _ in ranked) == [0, 1, 2, 3]
    # Texts 0 and 3 are the same: equal scores keep the input order.
    assert [i for i, _ in ranked if i in (0, 3)] == [0, 3]
    assert rerank(tiny_encoder, QUERY, TEXTS, top_n=2) == ranked[:2]
    assert rerank(tiny_encoder, QUERY, []) == []


def test_bad_arguments_raise(tiny_encoder) -> None:
    with pytest.raises(ValueError, match="score='dense'; expected one of \\('colbert', 'm3'\\)"):
        rerank_scores(tiny_encoder, QUERY, TEXTS, "dense")
    for top_n in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="top_n=.*expected an int >= 1, or None"):
            rerank(tiny_encoder, QUERY, TEXTS, top_n=top_n)
    with pytest.raises(ValueError, match="non-negative"):
        rerank_scores(tiny_encoder, QUERY, TEXTS, "m3", (1.0, -1.0, 1.0))
