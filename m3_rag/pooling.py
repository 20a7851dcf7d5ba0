"""ColBERT token pooling: fewer document vectors for nearly the same MaxSim.

Hierarchical pooling of Clavié, Chaffin and Adams (Answer.AI, arXiv 2409.14683), as PyLate's
``pool_embeddings_hierarchical``: a document's token vectors are clustered by Ward
agglomeration and each cluster is replaced by its mean, re-normalised. With pool factor
``f`` a document of ``n`` tokens keeps ``floor(n / f)`` vectors (:func:`pooled_rows`), so the
index holds ``f`` times fewer ColBERT vectors and MaxSim costs ``f`` times less. Queries are
never pooled.

:func:`pool_colbert` clusters a whole batch of documents at once, on the device of its input
(torch only: CUDA or CPU). The documents' Ward distance matrices are stacked in padded tensors,
and in each round every document merges all its pairs of reciprocal nearest neighbours
(Lance-Williams updates, cached row minima; see :func:`_ward_merges`): no Python loop over tokens,
documents or single merges, and 512 tokens pooled by 2 take about 6 rounds. The partition is
exactly that of scipy's ``linkage(ward)`` + ``fcluster(maxclust)`` on PyLate's features (tested).

>>> import torch
>>> docs = [torch.nn.functional.normalize(torch.randn(n, 8, generator=torch.Generator().manual_seed(n)), dim=-1)
...         for n in (3, 10)]
>>> targets = [pooled_rows(len(d), factor=2) for d in docs]
>>> targets
[3, 5]
>>> pooled = pool_colbert(docs, targets)
>>> [tuple(p.shape) for p in pooled]
[(3, 8), (5, 8)]
>>> pooled[0] is docs[0]          # shorter than 2 * factor: returned as it came
True
>>> bool(torch.allclose(pooled[1].norm(dim=-1), torch.ones(5)))
True
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch

if TYPE_CHECKING:
    import numpy as np
    from typing_extensions import TypeIs  # typing.TypeIs is Python 3.13+

__all__ = ["DEFAULT_WINDOW", "FEATURES", "PooledColbert", "pooled_rows", "pool_colbert", "pool_partitions"]

#: Documents longer than this many tokens are clustered window by window (see :func:`pool_colbert`).
#: 512 keeps every document up to 512 tokens (all of m3-mini's, the usual RAG chunk) exactly
#: PyLate's clustering; ``benchmarks/pooling.py --windows`` measures the trade-off.
DEFAULT_WINDOW = 512

#: The two clustering spaces: PyLate's (rows of 1 - cosine similarity) or the vectors themselves.
FEATURES = ("similarity_rows", "embeddings")

# Padded sizes of the initial Gram matrices are multiples of this: each document's padded size then
# depends on its own length only (so its floats do not depend on its batch), and a short
# document does not pay a long one's cubic Gram cost.
_BUCKET = 64

# Narrowest group of windows that merge together, and most distances in one group (see _pool_batch):
# 2^25 float32 distances, plus their float64 Gram on the way, is about 0.5 GB.
_MIN_GROUP = 128
_MAX_CELLS = 1 << 25


def _is_int(value: object) -> TypeIs[numbers.Integral]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy ints too


def _check_int(value: object, what: str, minimum: int, fix: str) -> int:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{what} is {value!r}; expected an int >= {minimum}. Fix: {fix}")
    return int(value)


def pooled_rows(n_tokens: int, factor: int, max_rows: int | None = None) -> int:
    """How many ColBERT vectors a document of ``n_tokens`` keeps after pooling by ``factor``.

    ``n_tokens`` when ``factor == 1`` or ``n_tokens < 2 * factor`` (too short to pool),
    else ``floor(n_tokens / factor)``; then at most ``max_rows`` when given: a long document
    still keeps a pooled representation of all its tokens within a row limit (1023 rows at
    D=1024 for Qdrant's 2^20-float multivector limit) instead of losing its tail.

    Parameters
    ----------
    n_tokens
        The document's token vectors (rows of its ``[n_tokens, D]`` ColBERT matrix), >= 0.
    factor
        Pool factor, an int >= 1 (1: no pooling).
    max_rows
        Optional cap on the result, an int >= 1.

    >>> pooled_rows(300, 2), pooled_rows(300, 3), pooled_rows(7, 4), pooled_rows(8, 4), pooled_rows(9, 1)
    (150, 100, 7, 2, 9)
    >>> pooled_rows(8191, 2, max_rows=1023), pooled_rows(8191, 1, max_rows=1023), pooled_rows(100, 2, max_rows=1023)
    (1023, 1023, 50)
    >>> pooled_rows(10, 0)
    Traceback (most recent call last):
    ...
    ValueError: pool factor is 0; expected an int >= 1. Fix: pass factor=1 for no pooling, 2 or more to pool
    """
    factor = _check_int(factor, "pool factor", 1, "pass factor=1 for no pooling, 2 or more to pool")
    n_tokens = _check_int(n_tokens, "n_tokens", 0, "pass the number of token vectors of the document")
    rows = n_tokens if factor == 1 or n_tokens < 2 * factor else n_tokens // factor
    if max_rows is not None:
        cap = _check_int(max_rows, "max_rows", 1, "pass None for no cap, or the most rows a document may keep")
        rows = min(rows, cap)
    return rows


def pool_colbert(
    vectors: Sequence[torch.Tensor] | Sequence[np.ndarray],
    targets: Sequence[int],
    *,
    features: Literal["similarity_rows", "embeddings"] = "similarity_rows",
    window: int = DEFAULT_WINDOW,
    device: str | torch.device | None = None,
) -> list[torch.Tensor]:
    """Pool each document's token vectors ``[n_i, D]`` to exactly ``targets[i]`` rows.

    Each document is clustered by Ward agglomeration into ``targets[i]`` clusters (the
    partition of scipy's ``linkage(X, "ward")`` cut by ``fcluster(t=targets[i],
    criterion="maxclust")``); each cluster becomes the mean of its vectors, L2-normalised.
    Rows come out ordered by each cluster's first token. A document with ``targets[i] == n_i``
    is returned unchanged (the same values bit for bit; the same tensor if it was a float32
    tensor on ``device``). Ties between equal distances go to the lowest token indices, and a
    document's result does not depend on the other documents of the batch or their order.

    A document longer than ``window`` tokens is cut into ``ceil(n_i / window)`` consecutive
    windows of near-equal length, clustered separately (the windows of all documents merge
    together, in lockstep); window ``j`` gets its share of the target proportional to its length
    (``floor(t*C_j/n) - floor(t*C_{j-1}/n)`` with ``C_j`` the tokens up to its end), so the shares
    add up to the target exactly and every window keeps at least one row. Memory is then about
    ``20 * windows * window^2`` bytes (float64 Gram, float32 distances) instead of ``20 * n^2``
    per document; a batch is clustered in groups of at most 2^25 distances.

    On CPU, pooling runs on one intra-op thread of the calling thread (see
    :func:`_one_intra_op_thread`; several threads may pool at once). On CUDA the partitions are
    the same; the cluster sums use ``index_add_``, whose float order on CUDA is not fixed, so
    pooled vectors may differ in their last bits between runs there (on CPU they never do). The
    Gram matrices are float64: fast on data-centre GPUs, slow on consumer ones.

    Parameters
    ----------
    vectors
        Per document, its ColBERT matrix ``[n_i, D]`` (torch tensors or numpy arrays, any float
        dtype), rows L2-normalised as the encoder gives them; one ``D`` for all.
    targets
        Rows to keep per document, ``1 <= targets[i] <= n_i`` (``0`` for an empty document);
        usually ``pooled_rows(n_i, factor, max_rows)``.
    features
        ``"similarity_rows"`` (default, PyLate's): each token is described by its row of
        ``1 - E Eᵀ`` and Ward runs on Euclidean distances between those rows.
        ``"embeddings"``: Ward on the vectors themselves (squared distance ``2 - 2 cos``).
    window
        Longest span of tokens clustered together, an int >= 2 (default :data:`DEFAULT_WINDOW`).
    device
        Where to compute and return; default the first input tensor's device (CPU for numpy).

    Returns
    -------
    list[torch.Tensor]
        Per document, ``[targets[i], D]`` float32 on ``device``.

    >>> import torch
    >>> e = torch.tensor([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0], [0.141, 0.99]])
    >>> pool_colbert([e], [2])[0].round(decimals=3)
    tensor([[0.9970, 0.0710],
            [0.0710, 0.9970]])
    """
    parts = pool_partitions(vectors, targets, features=features, window=window, device=device)
    return parts.pooled


class PooledColbert(NamedTuple):
    """What :func:`pool_partitions` returns."""

    pooled: list[torch.Tensor]
    """Per document, ``[targets[i], D]`` float32: what :func:`pool_colbert` returns."""
    labels: list[torch.Tensor]
    """Per document, ``[n_i]`` int64: the row of ``pooled[i]`` that each token was pooled into."""


def pool_partitions(
    vectors: Sequence[torch.Tensor] | Sequence[np.ndarray],
    targets: Sequence[int],
    *,
    features: Literal["similarity_rows", "embeddings"] = "similarity_rows",
    window: int = DEFAULT_WINDOW,
    device: str | torch.device | None = None,
) -> PooledColbert:
    """:func:`pool_colbert`, also returning the clustering: ``.pooled`` and ``.labels``.

    ``.labels[i]`` is ``[n_i]`` int64: for each token of document ``i``, the row of
    ``.pooled[i]`` its cluster became (``arange(n_i)`` for an unchanged document).

    >>> import torch
    >>> e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    >>> pool_partitions([e], [3]).labels[0]        # the duplicate rows 0 and 2 merge first
    tensor([0, 1, 0, 2])
    """
    if features not in FEATURES:
        raise ValueError(
            f"features is {features!r}; expected one of {FEATURES}. Fix: pass features='similarity_rows' (PyLate's)"
        )
    _check_int(window, "window", 2, "pass the longest span of tokens to cluster together, e.g. 512")
    if len(targets) != len(vectors):
        raise ValueError(f"{len(vectors)} documents but {len(targets)} targets; expected one target per document")
    mats = [torch.as_tensor(v) for v in vectors]
    dev = torch.device(device) if device is not None else (mats[0].device if mats else torch.device("cpu"))
    dims = {m.shape[1] for m in mats if m.dim() == 2}
    for i, (m, t) in enumerate(zip(mats, targets, strict=True)):
        if m.dim() != 2 or not m.is_floating_point():
            raise ValueError(f"document {i} is a {m.dim()}-d {m.dtype} array; expected a float [n_tokens, D] matrix")
        n = m.shape[0]
        if not _is_int(t) or not (min(1, n) <= t <= n):
            raise ValueError(
                f"target {t!r} for document {i} of {n} tokens; expected an int in [{min(1, n)}, {n}]. "
                "Fix: pass pooled_rows(n_tokens, factor, max_rows)"
            )
    if len(dims) > 1:
        raise ValueError(f"documents have different widths {sorted(dims)}; expected one ColBERT dimension D")
    targets = [int(t) for t in targets]
    out: list[torch.Tensor] = [m.to(dev, torch.float32) for m in mats]
    labels: list[torch.Tensor] = [torch.arange(m.shape[0], device=dev) for m in mats]
    todo = [i for i, (m, t) in enumerate(zip(mats, targets, strict=True)) if t < m.shape[0]]
    if todo:
        with _one_intra_op_thread(dev):
            pooled, token_rows = _pool_batch([out[i] for i in todo], [targets[i] for i in todo], features, window)
        for i, p, lab in zip(todo, pooled, token_rows, strict=True):
            out[i], labels[i] = p, lab
    return PooledColbert(out, labels)


def _windows(lengths: torch.Tensor, targets: torch.Tensor, window: int):
    """Cut documents into windows; returns per window (document, length, target share).

    ``lengths``, ``targets``: ``[B]`` int64. A document gets ``m = ceil(n / window)`` windows of
    near-equal length, at most ``floor(n t / (n + t))`` of them so that every window's length is
    at least ``n / t`` and its share (cumulative rounding) at least one row.
    """
    n, t = lengths, targets
    m = torch.minimum(-(-n // window), (n * t) // (n + t)).clamp_min(1)
    doc = torch.repeat_interleave(torch.arange(len(n), device=n.device), m)
    first = torch.cumsum(m, 0) - m
    j = torch.arange(len(doc), device=n.device) - first[doc]
    base, extra = (n // m)[doc], (n % m)[doc]
    start = base * j + torch.minimum(j, extra)
    length = base + (j < extra).long()
    end = start + length
    nd, td = n[doc], t[doc]
    share = (td * end) // nd - (td * start) // nd
    return doc, length, share


def _initial_distances(emb: torch.Tensor, lengths: torch.Tensor, features: str) -> torch.Tensor:
    """Squared Euclidean distances ``[b, s, s]`` float32 between the tokens of ``b`` windows zero-padded to ``s``.

    ``similarity_rows``: between rows of ``1 - S``, ``S = E Eᵀ`` in float32 as PyLate's (the
    features scipy receives there). Distances come from a Gram matrix, ``|x|² + |y|² - 2 x·y``,
    which in float32 would lose the small distances between similar tokens (1e-4 relative on
    clustered data, enough to change merges), so the Gram and the subtraction run in float64 and
    only the result is rounded to float32. ``+inf`` on the diagonal and wherever a padding token
    is involved (rounding may leave a hair below 0 elsewhere).
    """
    b, s, _ = emb.shape
    valid = torch.arange(s, device=emb.device) < lengths[:, None]
    if features == "similarity_rows":
        # Padding rows of 1 - S are all ones: they only touch padding entries, masked below.
        # Padding columns are 1 in every real row: one constant added to the whole Gram, cancelled.
        feats = (1 - torch.bmm(emb, emb.transpose(1, 2))).to(torch.float64)
    else:
        feats = emb.to(torch.float64)
    dist = torch.empty(b, s, s, device=emb.device)
    _gram_distances(feats, dist)
    dist.masked_fill_(~valid[:, :, None], float("inf")).masked_fill_(~valid[:, None, :], float("inf"))
    dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    return dist


def _gram_distances(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write ``|x_i|² + |x_j|² - 2 x_i·x_j`` of the rows of ``x [b, s, k]`` into ``out [b, s, s]``;
    returns ``|x_i|² [b, s]``.

    The Gram matrix is symmetric: cut into halves, its off-diagonal block is computed once and
    mirrored, the diagonal blocks the same way down to 128 rows (5/8 of the products at 512 rows).
    """
    s = x.shape[1]
    if s <= 128 or s % 2:
        gram = torch.bmm(x, x.transpose(1, 2))
        sq = torch.diagonal(gram, dim1=1, dim2=2)
        out.copy_(torch.add(sq[:, :, None], sq[:, None, :]).sub_(gram, alpha=2))
        return sq
    h = s // 2
    sq1 = _gram_distances(x[:, :h], out[:, :h, :h])
    sq2 = _gram_distances(x[:, h:], out[:, h:, h:])
    cross = torch.add(sq1[:, :, None], sq2[:, None, :]).sub_(torch.bmm(x[:, :h], x[:, h:].transpose(1, 2)), alpha=2)
    out[:, :h, h:].copy_(cross)
    out[:, h:, :h].copy_(cross.transpose(1, 2))
    return torch.cat((sq1, sq2), 1)


def _pool_batch(mats: list[torch.Tensor], targets: list[int], features: str, window: int):
    """Pool float32 ``[n_i, D]`` matrices (all with ``targets[i] < n_i``) on their device.

    Returns per document the pooled ``[t_i, D]`` and each token's row ``[n_i]``. Windows are
    clustered in buckets of equal padded length (a multiple of 64): a window's padded size then
    depends on its own length only, so its floats do not depend on its batch, and short windows do
    not pay for long ones.
    """
    dev = mats[0].device
    flat = torch.cat(mats)  # [N, D], documents one after the other
    lengths = torch.tensor([m.shape[0] for m in mats], device=dev)
    finite = torch.isfinite(flat.sum(dim=1))  # inf or NaN anywhere in a row (unit rows cannot overflow)
    if not bool(finite.all()):
        row = int(torch.nonzero(~finite)[0])
        doc_i = int(torch.searchsorted(torch.cumsum(lengths, 0), row, right=True))
        raise ValueError(f"pooled document {doc_i} (counting only those pooled) has a NaN or inf value; "
                         "expected finite vectors. Fix: check the encoder output")
    tgt = torch.tensor(targets, device=dev)
    doc, ulen, share = _windows(lengths, tgt, window)
    ustart = torch.cumsum(ulen, 0) - ulen  # each window's first token in `flat`
    tok_unit = torch.repeat_interleave(torch.arange(len(doc), device=dev), ulen)
    tok_pos = torch.arange(flat.shape[0], device=dev) - ustart[tok_unit]
    root = torch.empty(flat.shape[0], dtype=torch.long, device=dev)  # each token's cluster, as its first token
    padded = -(-ulen // _BUCKET) * _BUCKET
    # Windows merge in groups of a power-of-two width (at least 128): few groups, so few rounds of
    # small operations, for at most twice the row length; a group holds at most _MAX_CELLS distances
    # (memory). Padding and grouping never change a window's merges.
    width = torch.clamp_min(2 ** torch.ceil(torch.log2(padded.double())).long(), _MIN_GROUP)
    for group in torch.unique(width).tolist():
        members = torch.nonzero(width == group).squeeze(1)
        for units in torch.split(members, max(1, _MAX_CELLS // group**2)):
            in_group = torch.zeros_like(width, dtype=torch.bool).index_fill_(0, units, True)
            toks = torch.nonzero(in_group[tok_unit]).squeeze(1)
            at = ((torch.cumsum(in_group, 0) - 1)[tok_unit[toks]], tok_pos[toks])  # (window in group, position)
            sizes = torch.unique(padded[units]).tolist()
            if len(sizes) == 1:
                dist = _distances(flat, in_group, sizes[0], ulen, tok_unit, tok_pos, features)
            else:
                dist = torch.full((len(units), max(sizes), max(sizes)), float("inf"), device=dev)
                for size in sizes:  # Gram matrices padded to a multiple of 64 only (cubic cost)
                    sel = torch.nonzero(padded[units] == size).squeeze(1)
                    dist[sel, :size, :size] = _distances(flat, in_group & (padded == size), size, ulen, tok_unit,
                                                         tok_pos, features)  # fmt: skip
            parent = _ward_merges(dist, ulen[units], (ulen - share)[units])
            for _ in range(max(1, math.ceil(math.log2(dist.shape[1])))):  # pointer jumping to each chain's root
                parent = parent.gather(1, parent)
            root[toks] = ustart[tok_unit[toks]] + parent[at]
    sums = torch.zeros_like(flat).index_add_(0, root, flat)
    keep = torch.zeros(flat.shape[0], dtype=torch.bool, device=dev)
    keep[root] = True
    pooled = torch.nn.functional.normalize(sums[keep], dim=-1)
    # A token's row = rank of its cluster's root among the kept rows of its document.
    first_row = torch.cumsum(tgt, 0) - tgt
    tok_row = (torch.cumsum(keep, 0) - 1)[root] - first_row[doc[tok_unit]]
    return list(torch.split(pooled, targets)), list(torch.split(tok_row, lengths.tolist()))


def _distances(flat, in_set, size, ulen, tok_unit, tok_pos, features) -> torch.Tensor:
    """Initial Ward distances ``[b, size, size]`` of the windows in ``in_set`` (``[U]`` bool), in window order."""
    toks = torch.nonzero(in_set[tok_unit]).squeeze(1)
    emb = torch.zeros(int(in_set.sum()), size, flat.shape[1], device=flat.device)
    emb[(torch.cumsum(in_set, 0) - 1)[tok_unit[toks]], tok_pos[toks]] = flat.index_select(0, toks)
    return _initial_distances(emb, ulen[in_set], features)


@contextlib.contextmanager
def _one_intra_op_thread(device: torch.device) -> Iterator[None]:
    """On CPU, run the block with one intra-op thread in the calling thread, then restore.

    Pooling is many mid-sized operations. On a CPU shared with other work, each multi-threaded
    one can wait a whole scheduler slice for its second thread (measured on a shared 2-core
    machine: 8 ms for a 40k-element add that takes 6 µs on one thread), which made pooling 20
    times slower, and even its matrix products ran 2-3 times slower on two threads than on one.
    With OpenMP, torch's thread count is per thread, so other threads keep theirs (one that
    starts using torch meanwhile starts with one thread). To use more cores, pool batches from
    several threads: torch releases the GIL inside its operations.
    """
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Each row's nearest cluster is cached as one int64 key: the float32 bits of the distance (>= 0, so
# they order as the floats do) above the nearest column + 1, and bit 62 set. Read as float64 these
# keys are normal (never subnormal, NaN or inf) numbers in the same order as the integers, so
# float64 minima (vectorised, unlike int64 ones) pick the smallest distance, lowest column on ties.
# Field 0 marks a row that is no cluster.
_SHIFT = 29
_FIELD = (1 << _SHIFT) - 1
_HIGH = 1 << 62


def _pack(dist: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Keys ``[..., W]`` int64 of float32 distances ``[..., W]``; ``field`` holds ``column + 1``, or 0.

    Rounding can leave a distance at ``-0.0`` or a hair below 0: its key is that of ``+0.0``.
    """
    bits = dist.view(torch.int32).clamp_min(0).to(torch.int64)
    return bits.bitwise_left_shift_(_SHIFT).bitwise_or_(field | _HIGH)


def _unpack(key: torch.Tensor) -> torch.Tensor:
    """The float32 distance of keys."""
    return ((key ^ _HIGH) >> _SHIFT).to(torch.int32).view(torch.float32)


def _kmin(key: torch.Tensor, dim: int) -> torch.Tensor:
    return key.view(torch.float64).amin(dim=dim).view(torch.int64)


def _ward_merges(dist: torch.Tensor, lengths: torch.Tensor, merges: torch.Tensor) -> torch.Tensor:
    """Ward clustering of ``U`` windows at once, cut after ``merges[u]`` merges; returns ``parent [U, W]``.

    ``dist``: ``[U, W, W]`` float32 squared Ward distances, ``+inf`` on the diagonal and beyond
    ``lengths[u]``; modified in place. ``parent[u, i]`` links token ``i`` towards the first token of
    its cluster (follow it to a fixed point); window ``u`` ends with ``lengths[u] - merges[u]`` clusters.

    The result is the partition after the ``merges[u]`` lowest merges of Ward's dendrogram, that is
    scipy's ``fcluster(linkage(X, "ward"), t=lengths[u] - merges[u], criterion="maxclust")``, but
    the dendrogram is built in rounds, not merge by merge: Ward's linkage is *reducible*, so every
    pair of reciprocal nearest neighbours is a merge of the dendrogram and all of them can merge at
    once (the nearest-neighbour-chain argument). A round merges every such pair of every window
    (Lance-Williams on the pairs' rows, then once more between two pairs merged in the same
    round), updates each row's cached nearest cluster (``key``; rescanned only for rows whose
    nearest cluster merged), and records the merges with their heights. Heights only grow, so a
    window is done once it has recorded ``merges[u]`` merges below its current smallest distance;
    the lowest ``merges[u]`` are kept (ties: lower first token first). A round costs ``O(U W)``
    plus ``O(W)`` per merge; 512 tokens to 256 clusters take about 6 rounds, not 256 steps.
    """
    n_units, width = dist.shape[0], dist.shape[1]
    dev, inf = dist.device, float("inf")
    if width >= _FIELD:
        raise ValueError(f"window of {width} tokens; expected fewer than {_FIELD}")
    cols = torch.arange(width, device=dev)
    field = cols + 1
    rows = dist.view(n_units * width, width)
    active = cols < lengths[:, None]  # which rows are (still) clusters
    pen = torch.zeros(n_units, width, device=dev).masked_fill_(~active, inf)  # +inf at non-clusters
    size = active.to(dist.dtype)
    vals, args = dist.min(dim=2)
    no_cluster = int(_pack(vals.new_full((1,), inf), field.new_zeros(1)))
    key = _pack(vals, args + 1).masked_fill_(~active, no_cluster)
    active_f, pen_f, size_f, key_f = active.view(-1), pen.view(-1), size.view(-1), key.view(-1)
    done = merges == 0
    found: list[tuple[torch.Tensor, ...]] = []  # per round: (window, a, b, height) of its merges
    below = torch.zeros_like(merges)  # per window, merges recorded below its smallest distance
    wait_u, wait_h = merges.new_zeros(0), size.new_zeros(0)  # merges recorded, not yet below it
    while not bool(done.all()):
        # Reciprocal nearest neighbours a < b of the windows not done.
        near = ((key & _FIELD) - 1).clamp_min_(0)
        pair = (near.gather(1, near) == cols) & (cols < near) & active & ~done[:, None]
        pu, pa = pair.nonzero(as_tuple=True)
        ia = pu * width + pa
        pb = near.view(-1).index_select(0, ia)
        ib = pu * width + pb
        h = _unpack(key_f.index_select(0, ia))
        found.append((pu, pa, pb, h))
        # Lance-Williams for Ward on squared distances: each merged pair's row against every old
        # cluster, then between new ones; then +inf at every column that is no cluster. (Columns
        # of merged-away clusters keep stale values in the matrix: `pen` masks them when read.)
        ab = rows.index_select(0, torch.cat((ia, ib)))
        row_a, row_b = ab[: len(ia)], ab[len(ia) :]
        na, nb = size_f.index_select(0, ia)[:, None], size_f.index_select(0, ib)[:, None]
        sz = size.index_select(0, pu)
        new = torch.addcmul(torch.addcmul(sz * -h[:, None], na + sz, row_a), nb + sz, row_b).div_(sz + (na + nb))
        _join_pairs(new, pu, pa, pb, h, na, nb, width)
        size_f.index_copy_(0, ia, (na + nb).view(-1))
        active_f.index_fill_(0, ib, False)
        pen_f.index_fill_(0, ib, inf)
        new.add_(pen.index_select(0, pu))
        rows.index_copy_(0, ia, new)
        dist[pu, :, pa] = new
        # Nearest clusters: rows whose nearest cluster merged rescan; the others take the smaller
        # of their cached key and their distances to the new clusters.
        merged = torch.zeros_like(active)
        merged.view(-1).index_fill_(0, torch.cat((ia, ib)), True)
        stale = (merged.gather(1, near) & active).view(-1)
        closest = torch.full_like(key, no_cluster).view(torch.float64)
        candidates = _pack(new, (pa + 1)[:, None]).view(torch.float64)
        closest.scatter_reduce_(0, pu[:, None].expand_as(new), candidates, "amin")
        torch.minimum(key.view(torch.float64), closest, out=key.view(torch.float64))
        key_f.index_fill_(0, ib, no_cluster)
        stale.index_fill_(0, ia, False)  # the new clusters' rows are `new`
        key_f.index_copy_(0, ia, _kmin(_pack(new, field), 1))
        redo = stale.nonzero().squeeze(1)
        fresh = rows.index_select(0, redo).add_(pen.index_select(0, redo // width))
        key_f.index_copy_(0, redo, _kmin(_pack(fresh, field), 1))
        # A window is done once `merges` recorded heights lie below its smallest distance: every
        # later merge is at least that high.
        low = _unpack(_kmin(key, 1))
        wait_u, wait_h = torch.cat((wait_u, pu)), torch.cat((wait_h, h))
        now = wait_h < low[wait_u]
        below += torch.bincount(wait_u[now], minlength=n_units)
        wait_u, wait_h = wait_u[~now], wait_h[~now]
        done |= below >= merges
    parent = cols.repeat(n_units, 1)
    if found:
        units, a, b, heights = (torch.cat(x) for x in zip(*found, strict=True))
        # Keep each window's `merges` lowest (height, then a): sort by that, then stably by window.
        order = torch.argsort(_pack(heights, a + 1).view(torch.float64), stable=True)
        order = order[torch.argsort(units[order], stable=True)]
        units, a, b = units[order], a[order], b[order]
        count = torch.bincount(units, minlength=n_units)
        rank = torch.arange(len(units), device=dev) - (torch.cumsum(count, 0) - count)[units]
        keep = rank < merges[units]
        parent[units[keep], b[keep]] = a[keep]
    return parent


def _join_pairs(new, pu, pa, pb, h, na, nb, width) -> None:
    """Distances between the new clusters of pairs ``p``, ``q`` of one window merged in the same round.

    ``new[q]`` holds Lance-Williams of pair ``q`` against the *old* clusters. Against ``P = a_p ∪ b_p``,
    new too, the distance is Lance-Williams once more, of the lower-numbered pair ``s`` of the two
    over the other ``t``'s new row (``new[t, a_s]``, ``new[t, b_s]``): the same float for
    ``new[q, a_p]`` and ``new[p, a_q]``, so the matrix stays exactly symmetric.
    """
    count = torch.bincount(pu)
    if len(count) == 0 or int(count.max()) < 2:
        return
    dev = new.device
    first = torch.cumsum(count, 0) - count
    per = count[pu]  # pairs in each pair's window
    q = torch.repeat_interleave(torch.arange(len(pu), device=dev), per)
    p = first[pu][q] + torch.arange(len(q), device=dev) - torch.repeat_interleave(torch.cumsum(per, 0) - per, per)
    other = p != q
    q, p = q[other], p[other]
    s, t = torch.minimum(q, p), torch.maximum(q, p)
    flat, na, nb = new.view(-1), na.view(-1), nb.view(-1)
    x, y = flat[t * width + pa[s]], flat[t * width + pb[s]]  # D(T, a_s), D(T, b_s)
    n_a, n_b, n_t = na[s], nb[s], na[t] + nb[t]
    flat[q * width + pa[p]] = ((n_a + n_t) * x + (n_b + n_t) * y - n_t * h[s]) / (n_a + n_b + n_t)
