"""``--backend``/``--precision`` (and the adapters' ``backend=``/``precision=``) reach the encoder:
the CLI's index, search, delete, demo and eval, LangChain's fields and LlamaIndex's from_pretrained.

ONNX graphs are exported into a temporary cache (``$M3_RAG_ONNX_CACHE``), once per module."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from m3_rag.backends import BACKENDS, PRECISIONS
from m3_rag.cli import run

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

NOTES = {  # no sentence repeated: duplicate chunks would tie, and ties may break either way
    "bge_m3.md": "BGE-M3 produces a dense vector, sparse lexical weights and ColBERT multi-vectors from one forward pass. "
                 "It reads inputs of up to 8192 tokens in more than one hundred languages. "
                 "Its sparse head weighs each token of the input with a ReLU over a linear layer.",
    "qdrant.md": "Qdrant stores named dense, sparse and multi-vectors per point and fuses them in one query. "
                 "Payload filters narrow a search to the points whose metadata match. "
                 "Scalar quantization keeps an int8 copy of each dense vector and rescores with the originals.",
    "rrf.txt": "Reciprocal rank fusion merges ranked lists by summing one over the rank plus a constant. "
               "It needs no score calibration between the lists it merges. "
               "A constant of sixty is the usual choice in the literature.",
    "edge.txt": "Qdrant Edge runs the vector engine in-process, with no server to start. "
                "Its shards live in a local folder and are opened by one process at a time. "
                "Optimizing a shard builds its HNSW graph and merges its segments.",
}  # fmt: skip
CHUNKING = ["--chunk-tokens", "24", "--overlap-tokens", "4"]
QUERIES = ["Qdrant Edge engine", "rank fusion constant", "ColBERT multi-vectors"]
MODES = ("dense", "sparse", "hybrid+rerank", "m3")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture()
def onnx_env(onnx_cache, monkeypatch) -> Path:
    monkeypatch.setenv("M3_RAG_ONNX_CACHE", str(onnx_cache))
    return onnx_cache


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in NOTES.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _model(tiny_checkpoint: Path) -> list[str]:
    return ["--model", str(tiny_checkpoint), "--device", "cpu"]


def _top_ids(capsys, tiny_checkpoint, index: Path, *backend: str) -> dict[tuple[str, str], list[str]]:
    found = {}
    for query in QUERIES:
        for mode in MODES:
            code, out, err = _cli(capsys, "search", query, "--mode", mode, "-k", "3", "--json", "--path", str(index),
                                  *_model(tiny_checkpoint), *backend)  # fmt: skip
            assert code == 0, err
            found[(query, mode)] = [hit["id"] for hit in json.loads(out)["results"]]
    return found


# ----------------------------------------------------------------------------------------- CLI
def test_cli_index_and_search_on_onnx_find_what_torch_finds(tiny_checkpoint, corpus, tmp_path, onnx_env, capsys):
    torch_index, onnx_index = tmp_path / "torch", tmp_path / "onnx"
    code, out, err = _cli(capsys, "index", str(corpus), *CHUNKING, "--json", "--no-progress", "--path", str(torch_index),
                          *_model(tiny_checkpoint))  # fmt: skip
    assert code == 0, err
    assert not any(onnx_env.iterdir())  # the torch run exported nothing
    torch_report = json.loads(out)
    code, out, err = _cli(capsys, "index", str(corpus), *CHUNKING, "--json", "--no-progress", "--path", str(onnx_index),
                          *_model(tiny_checkpoint), "--backend", "onnx", "--precision", "fp32")  # fmt: skip
    assert code == 0, err
    assert any(onnx_env.iterdir())  # the onnx run exported (and cached) its graph
    onnx_report = json.loads(out)
    assert onnx_report["chunks_written"] == torch_report["chunks_written"] > len(NOTES)
    want = _top_ids(capsys, tiny_checkpoint, torch_index)
    assert all(want.values())
    assert _top_ids(capsys, tiny_checkpoint, onnx_index, "--backend", "onnx") == want
    # fp32 ONNX vectors equal torch's: either backend searches the other's index alike.
    assert _top_ids(capsys, tiny_checkpoint, torch_index, "--backend", "onnx") == want


def test_cli_search_and_delete_pass_the_backend_to_the_encoder(tiny_checkpoint, corpus, tmp_path, onnx_env, capsys,
                                                                monkeypatch):  # fmt: skip
    from m3_rag.encoder import M3Encoder

    index = tmp_path / "index"
    assert _cli(capsys, "index", str(corpus), *CHUNKING, "--no-progress", "--path", str(index), *_model(tiny_checkpoint))[0] == 0
    real, seen = M3Encoder.from_pretrained.__func__, []

    def recording(cls, *args, **kwargs):
        encoder = real(cls, *args, **kwargs)
        seen.append((kwargs.get("backend"), kwargs.get("precision"), encoder.config.backend, encoder.config.precision))
        return encoder

    monkeypatch.setattr(M3Encoder, "from_pretrained", classmethod(recording))
    code, _, err = _cli(capsys, "search", "Qdrant", "--path", str(index), *_model(tiny_checkpoint), "--backend", "onnx",
                        "--precision", "int8")  # fmt: skip
    assert code == 0, err
    code, out, err = _cli(capsys, "delete", "--source", str(corpus / "rrf.txt"), "--path", str(index),
                          *_model(tiny_checkpoint), "--backend", "onnx")  # fmt: skip
    assert code == 0, err
    assert out.startswith("deleted ")
    code, _, err = _cli(capsys, "search", "Qdrant", "--path", str(index), *_model(tiny_checkpoint))
    assert code == 0, err
    assert seen == [("onnx", "int8", "onnx", "int8"), ("onnx", "fp32", "onnx", "fp32"), ("torch", "fp32", "torch", "fp32")]


def test_cli_demo_runs_on_onnx(tiny_checkpoint, onnx_env, capsys):
    code, out, err = _cli(capsys, "demo", *_model(tiny_checkpoint), "--backend", "onnx", "--no-progress", "-k", "1",
                          "--query", "What does Qdrant Edge do?")  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == f"model: {tiny_checkpoint} (cpu, float32, onnx fp32)"


BAD = {
    "unknown backend": (["--backend", "tf"], ["--backend 'tf' is not known", f"expected {' or '.join(BACKENDS)}", "Fix:"]),
    "unknown precision": (["--backend", "onnx", "--precision", "fp16"],
                          ["--precision 'fp16' is not known", f"expected {' or '.join(PRECISIONS)}", "Fix:"]),
    "int8 on torch": (["--precision", "int8"],
                      ["--precision int8 needs --backend onnx, found --backend torch", "expected fp32", "Fix: add --backend onnx"]),
}  # fmt: skip
COMMANDS = {
    "index": ["index", "{w}/docs", "--no-progress"],
    "search": ["search", "q"],
    "delete": ["delete", "--all", "--yes"],
    "demo": ["demo", "--no-progress"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_cli_bad_backend_or_precision_is_a_usage_error_before_the_model_loads(command, case, tiny_checkpoint, corpus, tmp_path,
                                                                             capsys, monkeypatch):  # fmt: skip
    from m3_rag.encoder import M3Encoder

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before --backend/--precision were checked")

    monkeypatch.setattr(M3Encoder, "from_pretrained", no_load)
    extra, words = BAD[case]
    argv = [a.replace("{w}", str(tmp_path)) for a in COMMANDS[command]] + _model(tiny_checkpoint) + extra
    if command != "demo":
        argv += ["--path", str(tmp_path / "no-index-here")]  # search/delete: the usage error comes before "no index"
    code, out, err = _cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("m3-rag: error: ") and "Traceback" not in err + out
    for word in words:
        assert word in lines[0]
    assert not (tmp_path / "no-index-here").exists()


def test_cli_onnx_without_its_extra_is_one_line_naming_it(tiny_checkpoint, tmp_path, onnx_env, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    (tmp_path / "a.md").write_text("one note", encoding="utf-8")
    code, out, err = _cli(capsys, "index", str(tmp_path / "a.md"), "--no-progress", "--path", str(tmp_path / "index"),
                          *_model(tiny_checkpoint), "--backend", "onnx")  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("m3-rag: error: --backend onnx needs the extra m3-rag[onnx] (")
    assert 'Fix: pip install "m3-rag[onnx]"' in lines[0] and "onnxruntime" in lines[0]


def test_cli_help_lists_the_options(capsys):
    for command in ("index", "search", "delete", "demo", "eval"):
        code, out, _ = _cli(capsys, command, "--help")
        assert code == 0
        assert "--backend" in out and "--precision" in out, command


# ---------------------------------------------------------------------------------------- eval
def _eval(capsys, tiny_checkpoint, data_dir, out: Path, *extra: str) -> dict:
    code, stdout, err = _cli(capsys, "eval", str(data_dir / "xquad" / "en"), *_model(tiny_checkpoint), "--max-queries", "3",
                             "--max-docs", "10", "--no-progress", "--no-pipeline", "--json", str(out), *extra)  # fmt: skip
    assert code == 0, err
    report = json.loads(out.read_text())
    report["table"] = stdout
    return report


def test_eval_records_the_backend_and_precision(tiny_checkpoint, data_dir, tmp_path, onnx_env, capsys):
    torch_fp32 = _eval(capsys, tiny_checkpoint, data_dir, tmp_path / "torch.json")
    onnx_fp32 = _eval(capsys, tiny_checkpoint, data_dir, tmp_path / "fp32.json", "--backend", "onnx")
    onnx_int8 = _eval(capsys, tiny_checkpoint, data_dir, tmp_path / "int8.json", "--backend", "onnx", "--precision", "int8")
    assert (torch_fp32["backend"], torch_fp32["precision"]) == ("torch", "fp32")
    assert (onnx_fp32["backend"], onnx_fp32["precision"]) == ("onnx", "fp32")
    assert (onnx_int8["backend"], onnx_int8["precision"]) == ("onnx", "int8")
    assert "(onnx int8)" in onnx_int8["table"] and "(onnx" not in torch_fp32["table"]
    # fp32 ONNX scores what torch scores; int8 scored the same queries.
    for mode, scores in torch_fp32["scores"].items():
        assert onnx_fp32["scores"][mode]["ndcg@10"] == pytest.approx(scores["ndcg@10"], abs=1e-6), mode
    assert set(onnx_int8["scores"]) == set(torch_fp32["scores"])
    assert all(np.isfinite(s["ndcg@10"]) for s in onnx_int8["scores"].values())


@pytest.mark.parametrize("extra, message", [
    (["--backend", "tf"], "--backend 'tf' is not known"),
    (["--precision", "int8"], "--precision int8 needs --backend onnx"),
    (["--backend", "onnx", "--state-cache", "states"], "--state-cache holds torch states"),
])  # fmt: skip
def test_eval_bad_backend_options_fail_before_loading(extra, message, tiny_checkpoint, data_dir, tmp_path, capsys, monkeypatch):
    import m3_rag.evaluation.beir as beir

    def no_load(*args, **kwargs):
        raise AssertionError("the data was loaded before the options were checked")

    monkeypatch.setattr(beir, "load_beir", no_load)
    code, _, err = _cli(capsys, "eval", str(data_dir / "xquad" / "en"), *_model(tiny_checkpoint), "--no-progress",
                        *[a.replace("states", str(tmp_path / "states")) for a in extra])  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


# ------------------------------------------------------------------------------------ adapters
TEXTS = ["The cat sat on the mat.", "Quantum chromodynamics describes the strong force.", "Paris is in France."]


def test_langchain_loads_the_onnx_encoder_by_name(tiny_checkpoint, tiny_encoder, onnx_env):
    from m3_rag.cache import CachedEncoder
    from m3_rag.onnx.runtime import OnnxM3Encoder
    from m3_rag_langchain import BGEM3Embeddings, BGEM3SparseEmbeddings

    emb = BGEM3Embeddings(model_name=str(tiny_checkpoint), device="cpu", backend="onnx")
    assert isinstance(emb.encoder, CachedEncoder) and isinstance(emb.encoder.encoder, OnnxM3Encoder)
    assert (emb.encoder.encoder.config.backend, emb.encoder.encoder.config.precision) == ("onnx", "fp32")
    got = np.array(emb.embed_documents(TEXTS))
    np.testing.assert_allclose(got, tiny_encoder.encode_documents(TEXTS, outputs=("dense",)).dense, atol=1e-4)
    int8 = BGEM3SparseEmbeddings(model_name=str(tiny_checkpoint), backend="onnx", precision="int8")
    assert int8.encoder.encoder.config.precision == "int8" and len(int8.embed_documents(TEXTS)) == 3
    assert BGEM3Embeddings(model_name=str(tiny_checkpoint), device="cpu").encoder.encoder.config.backend == "torch"


def test_langchain_backend_with_a_ready_encoder_or_int8_on_torch_is_refused(tiny_checkpoint, tiny_encoder):
    from m3_rag_langchain import BGEM3Embeddings, M3Reranker

    with pytest.raises(ValueError, match=r"got encoder= with backend='onnx', precision='fp32'; expected those only when model_name="):
        BGEM3Embeddings(encoder=tiny_encoder, backend="onnx")
    with pytest.raises(ValueError, match=r"M3Reranker got encoder= with backend='torch', precision='int8'.*Fix: pass model_name="):
        M3Reranker(encoder=tiny_encoder, precision="int8")
    with pytest.raises(ValueError, match="precision 'int8' needs backend 'onnx'"):
        BGEM3Embeddings(model_name=str(tiny_checkpoint), precision="int8")
    with pytest.raises(ValueError, match="backend"):
        BGEM3Embeddings(model_name=str(tiny_checkpoint), backend="tf")
    assert BGEM3Embeddings(encoder=tiny_encoder, backend="torch", precision="fp32").encoder is tiny_encoder


def test_llamaindex_from_pretrained_forwards_the_backend(tiny_checkpoint, onnx_cache):
    from m3_rag.onnx.runtime import OnnxM3Encoder
    from m3_rag_llamaindex import BGEM3Embedding

    emb = BGEM3Embedding.from_pretrained(tiny_checkpoint, backend="onnx", onnx_cache_dir=onnx_cache)
    inner = emb.encoder.encoder
    assert isinstance(inner, OnnxM3Encoder) and inner.config.backend == "onnx"
    assert len(emb.get_text_embedding(TEXTS[0])) == inner.dense_dim
