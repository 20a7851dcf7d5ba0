"""The ``m3-rag`` command: index, search, delete, demo, eval, train, bench.

Every command that loads a model takes ``--model`` (hub id, local folder or ``m3-mini``),
``--device``, ``--dtype``, ``--backend`` (``torch``, default, or ``onnx``: ONNX Runtime on the CPU,
extra ``m3-rag[onnx]``, its graph exported once and cached in ``$M3_RAG_ONNX_CACHE``, default
``~/.cache/m3-rag/onnx``) and ``--precision`` (``fp32``, default, or ``int8``: the quantised ONNX
backbone, ``--backend onnx`` only); bad values are usage errors (exit 2) before the model loads.
(``eval`` takes all but ``--dtype``; the train commands take neither backend option.)
Store commands take ``--path`` (Qdrant Edge folder) or ``--url`` (Qdrant server), and ``--collection``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from m3_rag.cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, CliError, run_guarded
from m3_rag.cli.output import format_hits, format_skipped, hits_to_json, relative
from m3_rag.cli.resources import (
    DEFAULT_CLI_MODEL,
    BackendOpt,
    ModelOptions,
    PrecisionOpt,
    StoreOptions,
    check_mode,
    load_encoder,
    model_key,
    open_store,
    parse_filter_json,
    require_index,
)
from m3_rag.evaluation.cli import EvalCommand, eval_command
from m3_rag.train.cli import mine_command, pairs_command, train_command

__all__ = ["app", "main", "run"]

app = typer.Typer(
    name="m3-rag",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="BGE-M3 retrieval on Qdrant from the shell: index files, search them in five modes, run the demo.",
)

# ------------------------------------------------------------------------------- shared options
ModelOpt = Annotated[
    str, typer.Option("--model", "-m", envvar="M3_RAG_MODEL", help="hub id, local BGE-M3-layout folder, or 'm3-mini'")
]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: CUDA when present)")]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, float16 or bfloat16 (default: float16 on CUDA, float32 on CPU)")]
PathOpt = Annotated[Path, typer.Option("--path", "-p", help="Qdrant Edge index folder (embedded, on disk)")]
UrlOpt = Annotated[str | None, typer.Option(help="Qdrant server URL instead of --path, e.g. http://localhost:6333")]
ApiKeyOpt = Annotated[str | None, typer.Option(envvar="QDRANT_API_KEY", help="Qdrant server API key")]
CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="collection name")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]
ProgressOpt = Annotated[bool | None, typer.Option("--progress/--no-progress", help="progress bars (default: when stderr is a terminal)", show_default=False)]


def _show_progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _version(value: bool) -> None:
    if value:
        from m3_rag import __version__

        typer.echo(f"m3-rag {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")] = False,
) -> None:
    """BGE-M3 retrieval on Qdrant from the shell."""


# --------------------------------------------------------------------------------------- index
@app.command("index")
def index_command(
    paths: Annotated[list[Path], typer.Argument(help=".txt/.md/.jsonl files, folders, or BEIR folders", show_default=False)],
    model: ModelOpt = DEFAULT_CLI_MODEL,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    backend: BackendOpt = "torch",
    precision: PrecisionOpt = "fp32",
    path: PathOpt = Path("m3_index"),
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = "m3",
    shards: Annotated[int | None, typer.Option(help="--url only: shards of a new collection")] = None,
    replicas: Annotated[int | None, typer.Option(help="--url only: replication factor of a new collection")] = None,
    chunk_tokens: Annotated[int, typer.Option(help="tokens per chunk (model tokenizer)")] = 256,
    overlap_tokens: Annotated[int, typer.Option(help="tokens shared by consecutive chunks")] = 32,
    batch_size: Annotated[int, typer.Option(help="chunks per forward pass and write")] = 32,
    max_file_bytes: Annotated[
        int | None,
        typer.Option(help="most bytes read per file (default 64 MiB); a bigger file in a folder is skipped, one named is an error"),
    ] = None,
    pool_factor: Annotated[
        int | None,
        typer.Option(help="a new collection's ColBERT pool factor (1: every token; default: the collection's, else 2)"),
    ] = None,
    colbert_datatype: Annotated[
        str | None,
        typer.Option(help="a new collection's ColBERT storage: turbo4 (default), turbo8, float16 or float32"),
    ] = None,
    dense_quantization: Annotated[
        str | None,
        typer.Option(help="a new collection's dense index: int8 (default: Qdrant's scalar quantization, rescored) or none"),
    ] = None,
    progress: ProgressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Chunk and index files; re-runs skip unchanged files, replace changed ones and resume after Ctrl-C.

    Only regular files are read: in folders, hidden entries, symlinks, FIFOs/sockets/devices and
    files over --max-file-bytes are skipped and listed in the report."""
    from m3_rag.ingest import DEFAULT_MAX_FILE_BYTES, ChunkConfig, plan_index, run_index
    from m3_rag.store.schema import DEFAULT_COLBERT, ColbertSettings, check_dense_quantization

    model_options = ModelOptions(model, device, dtype, backend, precision)  # checked here: exit 2 before any load
    try:
        config = ChunkConfig(chunk_tokens, overlap_tokens)
    except ValueError as exc:
        raise CliError(f"--chunk-tokens/--overlap-tokens: {exc}", EXIT_USAGE) from exc
    if batch_size < 1:
        raise CliError(f"--batch-size is {batch_size}; expected a positive int.", EXIT_USAGE)
    if max_file_bytes is not None and max_file_bytes < 1:
        raise CliError(f"--max-file-bytes is {max_file_bytes}; expected a positive int.", EXIT_USAGE)
    for name, value in (("--shards", shards), ("--replicas", replicas)):
        if value is not None and value < 1:
            raise CliError(f"{name} is {value}; expected a positive int.", EXIT_USAGE)
    if (shards or replicas) and not url:
        raise CliError("--shards/--replicas need a Qdrant server (--url); an Edge folder is one local shard.", EXIT_USAGE)
    try:  # checked before the model loads, with the store's own rules
        ColbertSettings.validated(colbert_datatype or DEFAULT_COLBERT.datatype, DEFAULT_COLBERT.pool_factor if pool_factor is None else pool_factor)
    except ValueError as exc:
        raise CliError(f"--pool-factor/--colbert-datatype: {exc}", EXIT_USAGE) from exc
    if dense_quantization is not None:
        try:
            check_dense_quantization(dense_quantization)
        except ValueError as exc:
            raise CliError(f"--dense-quantization: {exc}", EXIT_USAGE) from exc
    encoder = load_encoder(model_options)
    show = _show_progress(progress)
    plan = plan_index(paths, encoder, config, model_key(model), show_progress=show,
                      max_file_bytes=max_file_bytes or DEFAULT_MAX_FILE_BYTES)  # fmt: skip
    where = StoreOptions(path, url, api_key, collection, shards, replicas, colbert_datatype, pool_factor, dense_quantization)
    store = open_store(encoder, where, create=True)
    try:
        report = run_index(store, plan, batch_size=batch_size, show_progress=show)
        if report.chunks_written and not report.interrupted:
            store.optimize()  # Edge builds its indexes only when asked
        total = store.count()
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({
            "files": report.files, "files_unchanged": report.files_unchanged, "files_replaced": report.files_replaced,
            "files_empty": report.files_empty, "chunks_written": report.chunks_written,
            "chunks_present": report.chunks_present, "chunks_in_index": total, "seconds": round(report.seconds, 3),
            "interrupted": report.interrupted, "skipped_files": [str(p) for p in report.skipped_paths],
            "skipped": [e.to_json() for e in report.skipped],
        }))  # fmt: skip
    else:
        notes = []
        if report.files_unchanged:
            notes.append(f"{report.files_unchanged} unchanged")
        if report.files_replaced:
            notes.append(f"{report.files_replaced} changed, replaced")
        if report.files_empty:
            notes.append(f"{report.files_empty} empty")
        typer.echo(
            f"{'interrupted after' if report.interrupted else 'indexed'} {report.files} file(s)"
            f"{' (' + ', '.join(notes) + ')' if notes else ''}: {report.chunks_written} chunk(s) written"
            f"{f' ({report.chunks_per_second:.1f} chunks/s)' if report.chunks_written else ''}, "
            f"{report.chunks_present} already present; "
            f"{total} chunk(s) in {where.describe()}"
        )
        for line in format_skipped(report.skipped):
            typer.echo(line)
    if report.interrupted:
        raise CliError("interrupted; what was written is kept. Run the same command again to resume.", EXIT_INTERRUPTED)


# -------------------------------------------------------------------------------------- search
@app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="the query text", show_default=False)],
    mode: Annotated[str, typer.Option(help="dense, sparse, hybrid, hybrid+rerank or m3")] = "hybrid+rerank",
    k: Annotated[int, typer.Option("-k", "--k", help="number of hits")] = 5,
    filter: Annotated[
        str | None, typer.Option("--filter", "-f", help='metadata filter, Mongo-style JSON, e.g. \'{"file": "a.md"}\'')
    ] = None,
    model: ModelOpt = DEFAULT_CLI_MODEL,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    backend: BackendOpt = "torch",
    precision: PrecisionOpt = "fp32",
    path: PathOpt = Path("m3_index"),
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = "m3",
    snippet_chars: Annotated[int, typer.Option(help="characters of text shown per hit")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Search the index; shows each hit's final score, its dense/sparse/ColBERT scores, source and text."""
    from m3_rag.ingest.indexer import MODEL_KEY

    check_mode(mode)
    model_options = ModelOptions(model, device, dtype, backend, precision)  # checked here: exit 2 before any load
    if k < 1:
        raise CliError(f"-k is {k}; expected a positive int.", EXIT_USAGE)
    flt = parse_filter_json(filter)
    where = StoreOptions(path, url, api_key, collection)
    if not url:
        require_index(where)  # before the (slow) model load
    encoder = load_encoder(model_options)
    store = open_store(encoder, where, create=False)
    try:
        hits = store.search(query, mode=mode, k=k, filter=flt, with_mode_scores=True)
    finally:
        store.close()
    indexed_with = {h.extra.get(MODEL_KEY) for h in hits} - {None}
    if indexed_with and model_key(model) not in indexed_with:
        typer.echo(
            f"warning: these chunks were indexed with {', '.join(sorted(indexed_with))}, searched with {model_key(model)}; "
            "scores mix two models. Fix: pass the indexing model with --model.",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps({"query": query, "mode": mode, "k": k, "results": hits_to_json(hits)}, ensure_ascii=False))
    else:
        typer.echo(f"{mode}: {len(hits)} hit(s) from {where.describe()}")
        typer.echo(format_hits(hits, snippet_chars=snippet_chars))


# -------------------------------------------------------------------------------------- delete
@app.command("delete")
def delete_command(
    source: Annotated[
        list[Path] | None, typer.Option("--source", "-s", help="delete every chunk of this indexed file (repeatable)")
    ] = None,
    ids: Annotated[list[str] | None, typer.Option("--id", help="delete this chunk id, e.g. 'PATH:0' (repeatable)")] = None,
    filter: Annotated[
        str | None, typer.Option("--filter", "-f", help='delete every chunk matching this metadata filter (JSON, as search --filter)')
    ] = None,
    all_chunks: Annotated[bool, typer.Option("--all", help="delete every chunk (needs --yes)")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="confirm --all")] = False,
    model: ModelOpt = DEFAULT_CLI_MODEL,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    backend: BackendOpt = "torch",
    precision: PrecisionOpt = "fp32",
    path: PathOpt = Path("m3_index"),
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = "m3",
) -> None:
    """Delete chunks by source file (--source), by chunk id (--id), by metadata filter (--filter),
    or all of them (--all --yes)."""
    model_options = ModelOptions(model, device, dtype, backend, precision)  # checked here: exit 2 before any load
    sources = [str(s.expanduser().resolve()) for s in source or []]
    ids = list(ids or [])
    flt = _delete_filter(filter)
    if not (sources or ids or flt is not None or all_chunks):
        raise CliError("nothing to delete; expected --source FILE, --id CHUNK_ID, --filter JSON or --all --yes.", EXIT_USAGE)
    if all_chunks and not yes:
        raise CliError("--all deletes every chunk of the collection; add --yes to confirm.", EXIT_USAGE)
    where = StoreOptions(path, url, api_key, collection)
    if not url:
        require_index(where)
    store = open_store(load_encoder(model_options), where, create=False)
    try:
        missing: list[str] = []
        deleted = 0
        if all_chunks:
            deleted += store.count()
            store.clear()
        for src in sources:
            n = store.count({"$doc_id": src})
            if n == 0:
                missing.append(f"source {relative(src)}")
            store.delete_by_doc_id(src)
            deleted += n
        if ids:
            present = {str(p.id) for p in store.get(ids)}
            missing += [f"id {i}" for i in ids if i not in present]
            store.delete(ids)
            deleted += len(present)
        if flt is not None:  # last: it counts what the other options left
            n = store.count(flt)
            if n == 0:
                missing.append(f"filter {filter}")
            else:
                store.delete_where(flt)
            deleted += n
        left = store.count()
    finally:
        store.close()
    typer.echo(f"deleted {deleted} chunk(s); {left} left in {where.describe()}")
    if missing and not all_chunks:
        raise CliError(f"nothing stored for {', '.join(missing)} (the rest was deleted).")


def _delete_filter(text: str | None) -> object:
    """``--filter`` for delete: as search's, but one that matches everything is refused."""
    try:
        everything = text is not None and json.loads(text) == {}
    except json.JSONDecodeError:
        everything = False  # parse_filter_json reports it
    if everything:
        raise CliError("--filter {} matches every chunk; expected at least one condition. Fix: use --all --yes.", EXIT_USAGE)
    return parse_filter_json(text)


# ---------------------------------------------------------------------------------------- demo
@app.command("demo")
def demo_command(
    model: ModelOpt = DEFAULT_CLI_MODEL,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    backend: BackendOpt = "torch",
    precision: PrecisionOpt = "fp32",
    k: Annotated[int, typer.Option("-k", "--k", help="hits shown per mode")] = 3,
    path: Annotated[Path | None, typer.Option(help="keep the demo index here (default: a temporary folder)")] = None,
    query: Annotated[list[str] | None, typer.Option("--query", "-q", help="your own query (repeatable)")] = None,
    progress: ProgressOpt = None,
) -> None:
    """Index the shipped corpus into a Qdrant Edge folder and compare all five modes, offline."""
    from m3_rag.demo import run_demo

    model_options = ModelOptions(model, device, dtype, backend, precision)  # checked here: exit 2 before any load
    if k < 1:
        raise CliError(f"-k is {k}; expected a positive int.", EXIT_USAGE)
    run_demo(model_options, k=k, path=path, queries=query or None, show_progress=_show_progress(progress))


# ----------------------------------------------------------------------- eval, train, bench
app.command("eval", cls=EvalCommand, help="nDCG@10 / Recall@100 per mode on a BEIR folder (needs the ranx metrics: the 'eval' extra).")(eval_command)
app.command("train", help="Fine-tune a model with BGE-M3's unified loss; saves the M3 layout.")(train_command)
app.command("train-pairs", help="Build title -> text training pairs from a BEIR corpus.")(pairs_command)
app.command("train-mine", help="Add hard negatives mined by a model to training rows.")(mine_command)

BENCHMARKS = ("encode", "store", "pooling")


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench_command(
    ctx: typer.Context,
    which: Annotated[str, typer.Argument(help="encode or store", show_default=False)],
) -> None:
    """Run benchmarks/<which>.py from a source checkout; extra arguments go to the script
    (see its options with: m3-rag bench encode -- --help)."""
    if which not in BENCHMARKS:
        raise CliError(f"unknown benchmark {which!r}; expected one of {', '.join(BENCHMARKS)}.", EXIT_USAGE)
    script = Path(__file__).resolve().parents[2] / "benchmarks" / f"{which}.py"
    if not script.is_file():
        raise CliError(
            f"benchmark script {script} not found; the benchmarks ship with the source checkout, not the wheel. "
            "Fix: git clone the repository and pip install -e it."
        )
    code = subprocess.call([sys.executable, str(script), *ctx.args])
    if code:
        raise CliError(f"benchmarks/{which}.py exited with status {code}.", code)


# ---------------------------------------------------------------------------------- entry point
def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return the exit code (all errors already printed as one line)."""
    return run_guarded(lambda: app(args=argv, prog_name="m3-rag", standalone_mode=False))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``m3-rag``)."""
    sys.exit(run(argv))
