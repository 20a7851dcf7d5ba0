"""Crash safety of the Edge path: SIGKILL mid-ingest, reopen, find every returned upsert, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from m3_rag.store import M3Store
from test_store_helpers import FakeEncoder

BATCH = 16
DIMS = {"dense_dim": 32, "colbert_dim": 16}


def batch_texts(b: int) -> tuple[list[str], list[str]]:
    texts = [f"document {b} part {i} about topic {(b * BATCH + i) % 7} and more words" for i in range(BATCH)]
    return texts, [f"b{b}-{i}" for i in range(BATCH)]


CHILD = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {tests!r})
    from m3_rag.store import M3Store
    from test_store_helpers import FakeEncoder
    from test_store_crash import batch_texts, DIMS
    store = M3Store(FakeEncoder(**DIMS), path={path!r})
    with open({log!r}, "a") as log:
        for b in range(100000):
            texts, ids = batch_texts(b)
            store.add_texts(texts, ids=ids)
            # Logged only after add_texts returned: these must survive the kill.
            log.write(f"{{b}}\\n"); log.flush(); os.fsync(log.fileno())
    """
)


def test_sigkill_mid_ingest_keeps_every_returned_upsert_and_resumes(tmp_path):
    path, log = tmp_path / "idx", tmp_path / "done.log"
    log.touch()
    script = CHILD.format(tests=str(Path(__file__).parent), path=str(path), log=str(log))
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while len(log.read_text().split()) < 5:
            assert child.poll() is None, "the ingesting process died on its own"
            assert time.monotonic() < deadline, "the ingesting process made no progress"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL

    done = [int(x) for x in log.read_text().split()]
    enc = FakeEncoder(**DIMS)
    store = M3Store(enc, path=path)  # reopens: the killed process's lock is gone
    returned = [i for b in done for i in batch_texts(b)[1]]
    points = store.get(returned, with_vectors=True)
    assert [p.id for p in points] == returned
    for p in points:
        assert p.dense.shape == (32,) and len(p.sparse) > 0 and p.colbert.shape[1] == 16
    # The batch in flight at the kill is all there or not at all... per point: never half-written.
    in_flight = batch_texts(max(done) + 1)[1]
    present = store.get(in_flight, with_vectors=True)
    for p in present:
        assert p.dense is not None and p.sparse is not None and p.colbert is not None and p.text
    assert store.count() == len(returned) + len(present)

    # Resume: every batch up to two past the kill, already-stored texts skipped (not re-encoded).
    last = max(done) + 3
    texts = [t for b in range(last) for t in batch_texts(b)[0]]
    ids = [i for b in range(last) for i in batch_texts(b)[1]]
    store.add_texts(texts, ids=ids, batch_size=BATCH, skip_existing=True)
    assert enc.texts_encoded == len(ids) - len(returned) - len(present)
    assert store.count() == len(ids)  # no duplicates
    store.close()
