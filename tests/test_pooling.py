"""ColBERT token pooling (m3_rag.pooling): row counts, determinism, scipy parity, windows."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from m3_rag.pooling import pool_colbert, pool_partitions, pooled_rows


def unit_rows(n: int, dim: int, seed: int, clustered: bool = False) -> torch.Tensor:
    """``[n, dim]`` L2-normalised Gaussian rows (no ties); ``clustered``: noisy copies of n/8 centres."""
    g = torch.Generator().manual_seed(seed)
    if clustered:
        centres = torch.randn(max(1, n // 8), dim, generator=g)
        x = centres[torch.randint(0, len(centres), (n,), generator=g)] + 0.3 * torch.randn(n, dim, generator=g)
    else:
        x = torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=-1)


def partition(labels) -> set[frozenset[int]]:
    labels = np.asarray(labels)
    return {frozenset(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)}


# ------------------------------------------------------------------------------ pooled_rows


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("max_rows", [None, 1, 5, 1023])
def test_pooled_rows_rule(factor, max_rows):
    for n in list(range(0, 60)) + [511, 512, 1023, 1024, 8191, 8192]:
        expected = n if factor == 1 or n < 2 * factor else n // factor
        if max_rows is not None:
            expected = min(expected, max_rows)
        assert pooled_rows(n, factor, max_rows) == expected, (n, factor, max_rows)


@pytest.mark.parametrize("factor", [0, -2, True, 2.0, "2", None])
def test_pooled_rows_rejects_bad_factor(factor):
    with pytest.raises(ValueError, match=r"pool factor is .*expected an int >= 1\. Fix: "):
        pooled_rows(10, factor)


@pytest.mark.parametrize("kwargs", [{"n_tokens": -1}, {"n_tokens": 3.0}, {"max_rows": 0}, {"max_rows": False}])
def test_pooled_rows_rejects_bad_sizes(kwargs):
    args = {"n_tokens": 10, "factor": 2, **kwargs}
    with pytest.raises(ValueError, match="expected an int"):
        pooled_rows(**args)


# ------------------------------------------------------------------------------ pool_colbert


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
@pytest.mark.parametrize("max_rows", [None, 5, 1023])
def test_rows_match_pooled_rows_and_unit_norm(factor, max_rows):
    lengths = [1, 2, 3, 5, 7, 8, 9, 16, 31, 64, 100, 130]
    docs = [unit_rows(n, 24, seed=n) for n in lengths]
    targets = [pooled_rows(n, factor, max_rows) for n in lengths]
    out = pool_colbert(docs, targets)
    for doc, target, pooled in zip(docs, targets, out, strict=True):
        assert pooled.shape == (target, 24) and pooled.dtype == torch.float32
        assert torch.allclose(pooled.norm(dim=-1), torch.ones(target), atol=1e-5)
        if target == len(doc):
            assert pooled is doc  # untouched: the very tensor


def test_unchanged_documents_are_bit_for_bit():
    e32 = unit_rows(6, 8, seed=1)
    e64 = e32.double().numpy() + 1e-12  # numpy float64 in: float32 out, the same values as float32 conversion
    e16 = e32.half()
    out = pool_colbert([e32, e64, e16, np.zeros((0, 8), np.float32)], [6, 6, 6, 0])
    assert out[0] is e32
    assert torch.equal(out[1], torch.from_numpy(e64).float())
    assert torch.equal(out[2], e16.float()) and out[2].dtype == torch.float32
    assert out[3].shape == (0, 8)
    assert pool_colbert([], []) == []


def test_pooled_rows_are_normalised_cluster_means():
    doc = unit_rows(90, 16, seed=3, clustered=True)
    res = pool_partitions([doc], [30])
    pooled, labels = res.pooled[0], res.labels[0]
    assert sorted(set(labels.tolist())) == list(range(30))
    means = torch.stack([doc[labels == r].mean(0) for r in range(30)])
    assert torch.allclose(pooled, torch.nn.functional.normalize(means, dim=-1), atol=1e-6)
    firsts = [int(torch.nonzero(labels == r)[0]) for r in range(30)]
    assert firsts == sorted(firsts)  # rows in the order of each cluster's first token


@pytest.mark.parametrize("features", ["similarity_rows", "embeddings"])
def test_deterministic_and_batch_independent(features):
    rng = random.Random(0)
    doc = unit_rows(301, 32, seed=7)
    alone = pool_partitions([doc], [pooled_rows(301, 3)], features=features, window=256)
    for trial in range(4):
        others = [unit_rows(rng.randint(1, 700), 32, seed=100 + 10 * trial + i) for i in range(rng.randint(1, 6))]
        batch = others + [doc]
        rng.shuffle(batch)
        at = next(i for i, d in enumerate(batch) if d is doc)
        targets = [pooled_rows(len(d), rng.choice([1, 2, 3, 4]), rng.choice([None, 50])) for d in batch]
        targets[at] = pooled_rows(301, 3)
        res = pool_partitions(batch, targets, features=features, window=256)
        assert torch.equal(res.pooled[at], alone.pooled[0]), trial
        assert torch.equal(res.labels[at], alone.labels[0]), trial
    again = pool_partitions([doc], [pooled_rows(301, 3)], features=features, window=256)
    assert torch.equal(again.pooled[0], alone.pooled[0])


@pytest.mark.parametrize("features", ["similarity_rows", "embeddings"])
def test_exact_duplicates_merge_first(features):
    doc = unit_rows(40, 16, seed=11)
    doc[25] = doc[9]
    labels = pool_partitions([doc], [39], features=features).labels[0]
    assert labels[25] == labels[9] and len(set(labels.tolist())) == 39
    doc[33] = doc[2]
    labels = pool_partitions([doc], [38], features=features).labels[0]
    singles = {frozenset({i}) for i in range(40) if i not in (2, 9, 25, 33)}
    assert partition(labels) == {frozenset({9, 25}), frozenset({2, 33})} | singles
    long = unit_rows(300, 16, seed=12)  # a pair far apart (the Gram is computed in blocks there)
    long[250] = long[9]
    labels = pool_partitions([long], [299], features=features).labels[0]
    assert labels[250] == labels[9]
    # Three copies: the two lowest-numbered merge first (ties go to the lowest indices).
    triple = unit_rows(12, 8, seed=5)
    triple[[4, 7]] = triple[1].clone()
    labels = pool_partitions([triple], [11], features=features).labels[0]
    assert labels[1] == labels[4] and labels[7] != labels[1]


@pytest.mark.parametrize("features", ["similarity_rows", "embeddings"])
@pytest.mark.parametrize("clustered", [False, True])
def test_partition_equals_scipy_ward_maxclust(features, clustered):
    """The partition is scipy's linkage(ward) + fcluster(maxclust), exactly, as PyLate computes it."""
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    rng = random.Random(1 + clustered)
    docs, targets = [], []
    for i in range(36):
        n = 4 + (i * 37) % 197  # 4 .. 200
        docs.append(unit_rows(n, rng.choice([16, 64, 384]), seed=1000 * clustered + i, clustered=clustered))
        targets.append(pooled_rows(n, (2, 3, 4)[i % 3]))
    for dim in {d.shape[1] for d in docs}:
        idx = [i for i, d in enumerate(docs) if d.shape[1] == dim]
        labels = pool_partitions([docs[i] for i in idx], [targets[i] for i in idx], features=features).labels
        for i, lab in zip(idx, labels, strict=True):
            e = docs[i].numpy()
            x = 1 - e @ e.T if features == "similarity_rows" else e  # PyLate feeds rows of 1 - cos
            want = hierarchy.fcluster(hierarchy.linkage(x, method="ward"), t=targets[i], criterion="maxclust")
            assert partition(lab.numpy()) == partition(want), (i, len(e), targets[i])


def test_windows_split_long_documents():
    n, window = 1300, 256  # 6 windows of 216-217 tokens
    doc = unit_rows(n, 16, seed=21)
    for target in (650, 433, 97, 7, 6, 1):
        labels = pool_partitions([doc], [target], window=window).labels[0]
        assert sorted(set(labels.tolist())) == list(range(target)), target  # every row used, every token assigned
        bounds = [0]
        m = min(-(-n // window), n * target // (n + target)) or 1
        for j in range(m):
            bounds.append(bounds[-1] + n // m + (j < n % m))
        for j in range(m):
            lo, hi = bounds[j], bounds[j + 1]
            rows_here = set(labels[lo:hi].tolist())
            assert len(rows_here) == target * hi // n - target * lo // n, (target, j)  # its proportional share
            assert not rows_here & set(labels[hi:].tolist())  # no cluster crosses a window boundary
    out = pool_colbert([doc], [pooled_rows(n, 2, max_rows=100)], window=window)[0]
    assert out.shape == (100, 16)


def test_window_above_length_changes_nothing():
    doc = unit_rows(200, 16, seed=4)
    a = pool_partitions([doc], [67], window=200).labels[0]
    b = pool_partitions([doc], [67], window=10_000).labels[0]
    assert torch.equal(a, b)


def test_invalid_arguments_raise():
    doc = unit_rows(10, 4, seed=0)
    with pytest.raises(ValueError, match="features"):
        pool_colbert([doc], [5], features="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        pool_colbert([doc], [5], window=1)
    with pytest.raises(ValueError, match="one target per document"):
        pool_colbert([doc, doc], [5])
    for bad in (0, 11, 2.0, True):
        with pytest.raises(ValueError, match=r"target .* expected an int in \[1, 10\]"):
            pool_colbert([doc], [bad])
    with pytest.raises(ValueError, match="widths"):
        pool_colbert([doc, unit_rows(10, 5, seed=0)], [5, 5])
    with pytest.raises(ValueError, match="matrix"):
        pool_colbert([doc[0]], [1])
    nan = doc.clone()
    nan[3, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        pool_colbert([doc, nan], [5, 5])


def test_reexported_from_scoring():
    from m3_rag import scoring

    assert scoring.pool_colbert is pool_colbert and scoring.pooled_rows is pooled_rows


def test_grouping_and_memory_chunks_change_nothing(monkeypatch):
    import m3_rag.pooling as pooling

    docs = [unit_rows(n, 16, seed=n) for n in (300, 200, 130, 129, 500, 64, 70, 1100)]
    targets = [pooled_rows(len(d), 3) for d in docs]
    whole = pool_partitions(docs, targets)
    monkeypatch.setattr(pooling, "_MAX_CELLS", 1 << 17)  # one window per group
    monkeypatch.setattr(pooling, "_MIN_GROUP", 64)
    split = pool_partitions(docs, targets)
    for x, y in zip(whole.pooled + whole.labels, split.pooled + split.labels, strict=True):
        assert torch.equal(x, y)


def test_thread_setting_is_restored():
    before = torch.get_num_threads()
    pool_colbert([unit_rows(50, 8, seed=2)], [25])
    assert torch.get_num_threads() == before


def test_numpy_integers_are_accepted():
    assert pooled_rows(np.int64(300), np.int32(2), max_rows=np.int64(100)) == 100
    out = pool_colbert([unit_rows(30, 8, seed=1).numpy()], [np.int64(10)])
    assert out[0].shape == (10, 8)
