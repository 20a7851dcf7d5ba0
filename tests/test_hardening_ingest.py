"""Hostile folder entries: FIFOs, sockets, devices, symlinks (to files, folders, devices, loops,
nothing) and oversized files never hang, never exhaust memory, and are reported with a reason.

Anything that could block (a FIFO opened for reading) runs under :func:`promptly`, a thread with
a timeout, or in a subprocess with a timeout, so a regression fails the test instead of hanging it.
Every call also passes a small byte limit, so even a regressed type check cannot read /dev/zero
for long.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from m3_rag.cli import run
from m3_rag.cli.output import format_skipped
from m3_rag.ingest import ChunkConfig, IngestError, discover, plan_index
from m3_rag.ingest import indexer as indexer_module
from m3_rag.ingest.files import SkippedFileError, read_bounded

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file types")

LIMIT = 4096
TIMEOUT = 30
GOOD = "Dense, sparse and ColBERT vectors from one forward pass. " * 3
CONFIG = ChunkConfig(24, 4)


def promptly(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a thread; fails the test if it has not returned within TIMEOUT s."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not return within {TIMEOUT}s (blocked on a special file?)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def make_socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    try:
        os.chdir(path.parent)  # a relative name: AF_UNIX paths are limited to ~108 bytes
        sock.bind(path.name)
    finally:
        os.chdir(cwd)
        sock.close()  # the socket file stays


@pytest.fixture()
def hostile(tmp_path: Path):
    """A folder with one good file and one entry of every hostile kind; FIFOs unblocked at teardown."""
    root = tmp_path / "docs"
    outside = tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "good.md").write_text(GOOD, encoding="utf-8")
    (outside / "secret.md").write_text("outside the folder", encoding="utf-8")
    os.mkfifo(root / "fifo.txt")
    make_socket(root / "sock.txt")
    os.symlink("/dev/zero", root / "zero.txt")
    os.symlink(root / "good.md", root / "inside_link.md")
    os.symlink(outside / "secret.md", root / "outside_link.md")
    os.symlink(outside, root / "linked_folder")
    os.symlink("loop.txt", root / "loop.txt")
    os.symlink("missing.txt", root / "dangling.txt")
    (root / "sub" / "big.txt").write_text("x" * (LIMIT + 1), encoding="utf-8")
    (root / "sub" / "big.jsonl").write_text(json.dumps({"_id": "1", "text": "y" * LIMIT}) + "\n", encoding="utf-8")
    (root / "sub" / "exact.txt").write_text("z" * LIMIT, encoding="utf-8")  # at the limit: indexed
    (root / ".hidden.txt").write_text("hidden", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG")
    yield SimpleNamespace(root=root, outside=outside)
    for fifo in root.rglob("*"):  # a reader stuck in open() (a regression) is released by a writer
        if fifo.is_fifo():
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass


EXPECTED_SKIPS = {
    "fifo.txt": "special_file",
    "sock.txt": "special_file",
    "zero.txt": "symlink",
    "inside_link.md": "symlink",
    "outside_link.md": "symlink",
    "linked_folder": "symlink",
    "loop.txt": "symlink",
    "dangling.txt": "symlink",
    "sub/big.txt": "too_large",
    "sub/big.jsonl": "too_large",
    ".hidden.txt": "hidden",
    "image.png": "unsupported_suffix",
}


def test_a_walk_indexes_regular_files_only_and_reports_every_skip_with_its_reason(hostile):
    files, skipped = promptly(discover, [hostile.root], max_file_bytes=LIMIT)
    assert [f.path for f in files] == [hostile.root / "good.md", hostile.root / "sub" / "exact.txt"]
    assert {str(e.path.relative_to(hostile.root)): e.reason for e in skipped} == EXPECTED_SKIPS
    details = {e.path.name: e.detail for e in skipped}
    assert "FIFO" in details["fifo.txt"] and "socket" in details["sock.txt"]
    assert "/dev/zero" in details["zero.txt"] and "not followed" in details["zero.txt"]
    assert f"over the limit of {LIMIT} bytes" in details["big.txt"]
    # nothing behind the links was listed: not the outside file, not the linked folder's content
    assert not any(hostile.outside in f.path.parents for f in files)


@pytest.mark.parametrize("name, found", [("fifo.txt", "a FIFO"), ("sock.txt", "a socket"),
                                         ("zero.txt", "a symlink to '/dev/zero', a character device")])  # fmt: skip
def test_a_special_file_named_explicitly_is_refused_without_being_opened(hostile, name, found):
    with pytest.raises(IngestError, match="expected a regular file") as info:
        promptly(discover, [hostile.root / name], max_file_bytes=LIMIT)
    assert found in str(info.value) and "Fix:" in str(info.value)


def test_a_device_named_explicitly_is_refused():
    with pytest.raises(IngestError, match="a character device"):
        promptly(discover, ["/dev/null"], max_file_bytes=LIMIT)


def test_a_symlink_named_explicitly_is_followed_to_a_regular_file_inside_or_outside(hostile):
    files, _ = discover([hostile.root / "inside_link.md", hostile.root / "outside_link.md"], max_file_bytes=LIMIT)
    assert [f.path for f in files] == [hostile.root / "good.md", hostile.outside / "secret.md"]
    assert all(f.explicit for f in files)


def test_a_symlinked_folder_named_explicitly_is_walked_but_links_inside_it_are_not(hostile, tmp_path):
    os.symlink(hostile.root, tmp_path / "docs_link")
    files, skipped = promptly(discover, [tmp_path / "docs_link"], max_file_bytes=LIMIT)
    assert [f.path for f in files] == [hostile.root / "good.md", hostile.root / "sub" / "exact.txt"]
    assert {e.path.name for e in skipped if e.reason == "symlink"} >= {"zero.txt", "linked_folder"}


@pytest.mark.parametrize("name, words", [("loop.txt", "symlink loop"), ("dangling.txt", "which does not exist")])
def test_a_broken_symlink_named_explicitly_raises(hostile, name, words):
    with pytest.raises(IngestError, match=words):
        discover([hostile.root / name], max_file_bytes=LIMIT)


def test_a_file_over_the_byte_limit_named_explicitly_raises_with_the_fix(hostile):
    for name in ("big.txt", "big.jsonl"):
        with pytest.raises(IngestError, match="over the limit of 4096 bytes.*--max-file-bytes"):
            discover([hostile.root / "sub" / name], max_file_bytes=LIMIT)
    files, _ = discover([hostile.root / "sub" / "big.txt"], max_file_bytes=LIMIT + 1)
    assert len(files) == 1


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_a_bad_byte_limit_raises(hostile, bad):
    with pytest.raises(ValueError, match="expected a positive int"):
        discover([hostile.root], max_file_bytes=bad)


def test_a_folder_with_nothing_indexable_says_what_it_skipped(tmp_path):
    root = tmp_path / "only_hostile"
    root.mkdir()
    os.mkfifo(root / "a.txt")
    os.symlink("/dev/zero", root / "b.txt")
    with pytest.raises(IngestError, match=r"2 other file\(s\) skipped: 1 special_file, 1 symlink; e.g. a.txt, a FIFO"):
        promptly(discover, [root], max_file_bytes=LIMIT)


def test_a_beir_corpus_that_is_a_symlink_is_not_followed(tmp_path):
    beir = tmp_path / "beir"
    beir.mkdir()
    (tmp_path / "real_corpus.jsonl").write_text('{"_id": "1", "text": "t"}\n', encoding="utf-8")
    os.symlink(tmp_path / "real_corpus.jsonl", beir / "corpus.jsonl")
    (beir / "queries.jsonl").write_text('{"_id": "q", "text": "q"}\n', encoding="utf-8")
    with pytest.raises(IngestError, match=r"1 other file\(s\) skipped: 1 symlink; e.g. corpus.jsonl"):
        discover([beir], max_file_bytes=LIMIT)  # and queries.jsonl is not indexed in its place


def test_the_read_limit_holds_while_reading_not_only_from_the_stat_size():
    status = Path("/proc/self/status")  # a regular file whose stat size (0) is not its length
    if not status.is_file() or status.stat().st_size != 0:
        pytest.skip("needs Linux /proc")
    with pytest.raises(SkippedFileError, match="when read") as info:
        read_bounded(status, 16)
    assert info.value.entry.reason == "too_large"
    assert len(read_bounded(status, 1 << 20)) > 16


def test_an_entry_swapped_after_the_walk_is_never_read_blocking_or_followed(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (root / name).write_text(GOOD, encoding="utf-8")
    files, _ = discover([root], max_file_bytes=LIMIT)
    for name in ("a.txt", "b.txt", "c.txt"):
        os.remove(root / name)
    os.mkfifo(root / "a.txt")
    os.symlink("/dev/zero", root / "b.txt")
    make_socket(root / "c.txt")
    reasons = []
    try:
        for file in files:
            with pytest.raises(SkippedFileError) as info:
                promptly(read_bounded, file.path, LIMIT)
            reasons.append(info.value.entry.reason)
    finally:
        try:
            os.close(os.open(root / "a.txt", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert reasons == ["special_file", "symlink", "special_file"]


def test_plan_index_skips_a_walked_file_that_changed_but_refuses_a_named_one(tiny_encoder, tmp_path, monkeypatch):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "keep.md").write_text(GOOD, encoding="utf-8")
    (root / "grows.md").write_text("short", encoding="utf-8")
    real_discover = indexer_module.discover

    def discover_then_grow(paths, **kwargs):
        found = real_discover(paths, **kwargs)
        (root / "grows.md").write_text("x" * (LIMIT + 10), encoding="utf-8")  # after the walk's stat
        return found

    monkeypatch.setattr(indexer_module, "discover", discover_then_grow)
    plan = promptly(plan_index, [root], tiny_encoder, CONFIG, "tiny", max_file_bytes=LIMIT)
    assert [Path(f.source).name for f in plan.files] == ["keep.md"]
    assert [(e.path.name, e.reason) for e in plan.skipped] == [("grows.md", "too_large")]
    (root / "grows.md").write_text("short", encoding="utf-8")
    with pytest.raises(IngestError, match="over the limit"):
        plan_index([root / "grows.md"], tiny_encoder, CONFIG, "tiny", max_file_bytes=LIMIT)


def test_the_human_report_lists_a_bounded_number_of_skips_unusual_first(tmp_path):
    entries = [SimpleNamespace(path=tmp_path / f"f{i:02d}.png", reason="unsupported_suffix", detail="suffix '.png'")
               for i in range(20)]  # fmt: skip
    entries.append(SimpleNamespace(path=tmp_path / "z.txt", reason="special_file", detail="a FIFO (never opened)"))
    lines = format_skipped(entries, limit=10)
    assert lines[0] == "skipped 21 entries: 1 special file, 20 unsupported suffix"
    assert lines[1].endswith("z.txt: a FIFO (never opened)") and len(lines) == 12
    assert lines[-1] == "  ... and 11 more (--json lists them all)"
    assert format_skipped([]) == []


def test_the_cli_finishes_and_reports_the_skips(hostile, tiny_checkpoint, tmp_path):
    """In a real process: a hang or a memory blow-up would hit the timeout."""
    store = tmp_path / "index"
    argv = [sys.executable, "-m", "m3_rag.cli", "index", str(hostile.root), "--model", str(tiny_checkpoint),
            "--device", "cpu", "--path", str(store), "--chunk-tokens", "24", "--overlap-tokens", "4",
            "--max-file-bytes", str(LIMIT), "--no-progress", "--json"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["files"] == 2 and report["chunks_written"] == report["chunks_in_index"] > 0
    assert report["skipped_files"] == [str(hostile.root / "image.png")]  # the key as before: other suffixes
    assert {str(Path(e["path"]).relative_to(hostile.root)): e["reason"] for e in report["skipped"]} == EXPECTED_SKIPS
    assert all(set(e) == {"path", "reason", "detail"} and e["detail"] for e in report["skipped"])


def test_the_cli_human_output_and_a_named_fifo(hostile, tiny_checkpoint, tmp_path, capsys):
    model = ["--model", str(tiny_checkpoint), "--device", "cpu", "--path", str(tmp_path / "index"), "--no-progress",
             "--chunk-tokens", "24", "--overlap-tokens", "4"]  # fmt: skip
    capsys.readouterr()
    assert promptly(run, ["index", str(hostile.root), "--max-file-bytes", str(LIMIT), *model]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith(f"skipped {len(EXPECTED_SKIPS)} entries: 2 special file, 6 symlink, 2 too large")
    assert any("fifo.txt: a FIFO (never opened)" in line for line in out)
    assert out[-1] == f"  ... and {len(EXPECTED_SKIPS) - 10} more (--json lists them all)"

    assert promptly(run, ["index", str(hostile.root / "fifo.txt"), *model]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a FIFO" in err[0] and "expected a regular file" in err[0]
    assert promptly(run, ["index", str(hostile.root), "--max-file-bytes", "0", *model]) == 2
