"""examples/server_cluster.md stays true: its CLI flags and Python arguments exist, and the CLI's
--shards/--replicas reach the server's create_collection (qdrant-client local mode stands in)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from m3_rag.cli import run

DOC = Path(__file__).resolve().parents[1] / "examples" / "server_cluster.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_every_documented_cli_flag_exists(capsys):
    commands = [line for block in blocks("bash") for line in block.splitlines() if line.startswith("m3-rag ")]
    assert {c.split()[1] for c in commands} == {"index", "search", "delete"}
    for line in commands:
        command = line.split()[1]
        assert run([command, "--help"]) == 0
        help_text = capsys.readouterr().out
        for flag in re.findall(r"(--[a-z][a-z-]*)", line):
            assert flag in help_text, f"{flag} of `{line}` is not an option of m3-rag {command}"


def test_documented_python_arguments_exist():
    from m3_rag.store import AsyncM3Store, M3Store

    python = "\n".join(blocks("python"))
    for name in ("url", "api_key", "prefer_grpc", "collection", "shard_number", "replication_factor"):
        assert f"{name}=" in python
        assert name in inspect.signature(M3Store).parameters
        assert name in inspect.signature(AsyncM3Store).parameters
    for block in blocks("python"):
        compile(block, str(DOC), "exec")  # every snippet is valid Python


def test_shards_and_replicas_reach_collection_creation(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    import qdrant_client

    created = []

    class StandInServer(qdrant_client.QdrantClient):
        def __init__(self, url=None, api_key=None, **kwargs):
            super().__init__(path=str(tmp_path / "server"))

        def create_collection(self, collection_name, **kwargs):
            created.append((collection_name, kwargs.get("shard_number"), kwargs.get("replication_factor")))
            return super().create_collection(collection_name, **kwargs)

    monkeypatch.setattr(qdrant_client, "QdrantClient", StandInServer)
    (tmp_path / "a.md").write_text("Shards split a collection; replicas copy each shard.", encoding="utf-8")
    common = ["--model", str(tiny_checkpoint), "--device", "cpu", "--no-progress", "--url", "http://node1:6333"]
    assert run(["index", str(tmp_path / "a.md"), "--collection", "handbook", "--shards", "4", "--replicas", "2", *common]) == 0
    assert created == [("handbook", 4, 2)]
    capsys.readouterr()
    # an existing collection keeps its layout: the options are not applied, and the CLI says so
    assert run(["index", str(tmp_path / "a.md"), "--collection", "handbook", "--shards", "8", *common]) == 0
    assert created == [("handbook", 4, 2)]
    assert "apply only when it is created" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--shards", "--replicas"])
def test_shards_need_a_server(flag, tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "a.md").write_text("text", encoding="utf-8")
    assert run(["index", str(tmp_path / "a.md"), flag, "2", "--path", str(tmp_path / "i"), "--model", str(tiny_checkpoint)]) == 2
    assert "need a Qdrant server (--url)" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()
