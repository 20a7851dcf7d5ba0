"""The logic shared by :class:`M3Store` and :class:`AsyncM3Store`: ids, plans, and turning
backend hits into results. No I/O here, so sync and async stores cannot drift apart."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any


from m3_rag.scoring import dense_scores, lexical_score, maxsim_score
from m3_rag.store.backends.base import Hit
from m3_rag.store.ids import UserId, check_user_id, to_point_id
from m3_rag.store.payload import DOC_ID_KEY, EXTRA_KEY, ID_KEY, METADATA_KEY, TEXT_KEY
from m3_rag.store.queries import MODE_OUTPUTS, QueryPlan, check_mode
from m3_rag.store.results import SearchResult, StoredPoint
from m3_rag.store.schema import COLBERT, DENSE, SPARSE, StoreSchema
from m3_rag.types import M3Output, OutputName

__all__ = [
    "new_ids",
    "query_outputs",
    "point_ids_of",
    "to_search_results",
    "to_stored_points",
    "backend_location",
]


def new_ids(n: int) -> list[UserId]:
    """Fresh ids for texts added without ids (random: re-adding such texts makes new points)."""
    return [str(uuid.uuid4()) for _ in range(n)]


def query_outputs(mode: str, schema: StoreSchema, with_mode_scores: bool) -> tuple[OutputName, ...]:
    """What to encode the query into: the mode's outputs, or all the store has for mode scores."""
    check_mode(mode, schema)
    return schema.outputs if with_mode_scores else MODE_OUTPUTS[mode]


def point_ids_of(ids: Sequence[UserId]) -> list:
    if isinstance(ids, (str, int)):
        raise TypeError(f"ids must be a list, found a single {type(ids).__name__}. Fix: pass [{ids!r}].")
    return [to_point_id(check_user_id(i)) for i in ids]


def _user_id(hit: Hit) -> UserId:
    # Points written by other tools may lack our `id` key; their point id is then the id.
    return hit.payload.get(ID_KEY, hit.point_id)


def _mode_scores(hit: Hit, query: M3Output, schema: StoreSchema, max_query_tokens: int | None) -> dict[str, float]:
    """Each mode's score of the hit, from its stored vectors (BGE-M3's formulas, float16 as stored)."""
    scores: dict[str, float] = {}
    v = hit.vectors
    if DENSE in v and query.dense is not None:
        scores[DENSE] = float(dense_scores(query.dense[0], v[DENSE][None, :])[0])
    if schema.has_sparse and query.sparse is not None:
        scores[SPARSE] = lexical_score(query.sparse[0], v[SPARSE]) if SPARSE in v else 0.0
    if COLBERT in v and query.colbert is not None:
        q = query.colbert[0][:max_query_tokens] if max_query_tokens else query.colbert[0]
        scores[COLBERT] = maxsim_score(q, v[COLBERT])
    return scores


def to_search_results(
    hits: Sequence[Hit],
    plan: QueryPlan,
    query: M3Output,
    schema: StoreSchema,
    with_mode_scores: bool,
    max_query_tokens: int | None = None,
) -> list[SearchResult]:
    results = []
    for hit in hits:
        p = hit.payload
        results.append(
            SearchResult(
                id=_user_id(hit),
                text=p.get(TEXT_KEY, ""),
                metadata=dict(p.get(METADATA_KEY) or {}),
                doc_id=p.get(DOC_ID_KEY),
                score=hit.score / plan.score_divisor,
                mode_scores=_mode_scores(hit, query, schema, max_query_tokens) if with_mode_scores else None,
                extra=dict(p.get(EXTRA_KEY) or {}),
            )
        )
    return results


def to_stored_points(hits: Sequence[Hit], point_ids: Sequence[Any]) -> list[StoredPoint]:
    """Stored points in the order asked for; ids that were not found are simply absent."""
    by_id = {str(h.point_id): h for h in hits}
    out = []
    for pid in dict.fromkeys(str(p) for p in point_ids):
        hit = by_id.get(pid)
        if hit is None:
            continue
        p, v = hit.payload, hit.vectors
        out.append(
            StoredPoint(
                id=_user_id(hit),
                text=p.get(TEXT_KEY, ""),
                metadata=dict(p.get(METADATA_KEY) or {}),
                doc_id=p.get(DOC_ID_KEY),
                extra=dict(p.get(EXTRA_KEY) or {}),
                dense=v.get(DENSE),
                sparse=v.get(SPARSE),
                colbert=v.get(COLBERT),
            )
        )
    return out


def backend_location(path: Any, location: Any, url: Any, client: Any) -> str:
    """Which backend the constructor arguments select; exactly one must be given."""
    given = {k: v for k, v in {"path": path, "location": location, "url": url, "client": client}.items() if v is not None}
    if len(given) != 1:
        raise ValueError(
            f"pass exactly one of path= (Qdrant Edge, embedded), location=':memory:' (qdrant-client "
            f"local mode), url= (a Qdrant server) or client=; found {sorted(given) or 'none'}."
        )
    return next(iter(given))


