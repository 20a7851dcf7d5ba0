"""Loading the model and opening the store for a command, with one-line errors."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from m3_rag.cli.errors import EXIT_USAGE, CliError

if TYPE_CHECKING:
    from m3_rag.backends import Backend, Precision

__all__ = ["ModelOptions", "StoreOptions", "load_encoder", "open_store", "parse_filter_json", "check_mode", "model_key",
           "require_index", "check_backend_options", "onnx_extra_errors", "BackendOpt", "PrecisionOpt"]  # fmt: skip

DEFAULT_CLI_MODEL = "m3-mini"
# The options of every command that loads a model (eval's too).
BackendOpt = Annotated[str, typer.Option(help="torch, or onnx (ONNX Runtime on the CPU; needs the onnx extra)")]
PrecisionOpt = Annotated[str, typer.Option(help="fp32, or int8 (--backend onnx only: quantised backbone)")]


@dataclass(frozen=True)
class ModelOptions:
    """The model a command loads; built at the command's start, so bad values are usage errors (exit 2)
    before anything is read."""

    name: str = DEFAULT_CLI_MODEL
    device: str | None = None
    dtype: str | None = None
    backend: str = "torch"  # torch or onnx
    precision: str = "fp32"  # fp32, or int8 (onnx only)

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in ("float32", "float16", "bfloat16"):
            from m3_rag.validation import short_repr

            raise CliError(f"--dtype {short_repr(self.dtype)} is not known; expected float32, float16 or bfloat16.", EXIT_USAGE)
        check_backend_options(self.backend, self.precision)


@dataclass(frozen=True)
class StoreOptions:
    path: Path = Path("m3_index")
    url: str | None = None
    api_key: str | None = None
    collection: str = "m3"
    shard_number: int | None = None  # server only, used when the collection is created
    replication_factor: int | None = None
    colbert_datatype: str | None = None  # None: the collection's recorded settings, or the defaults
    colbert_pool_factor: int | None = None
    dense_quantization: str | None = None  # None: the collection's, or the store's default

    def describe(self) -> str:
        where = self.url if self.url else str(self.path)
        return f"{where} (collection {self.collection!r})"


def model_key(name: str) -> str:
    """The model's identity in fingerprints: a local folder by its absolute path, else the name."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def check_backend_options(backend: str, precision: str) -> tuple[Backend, Precision]:
    """``--backend``/``--precision`` by the encoder's own rule (:func:`m3_rag.backends.check_backend`),
    or a one-line usage error in the command line's spelling."""
    from m3_rag.backends import BACKENDS, PRECISIONS, check_backend
    from m3_rag.validation import short_repr

    try:
        return check_backend(backend, precision)
    except ValueError as exc:
        if backend not in BACKENDS:
            message = (f"--backend {short_repr(backend)} is not known; expected {' or '.join(BACKENDS)}. "
                       "Fix: omit it for torch, or pass --backend onnx (ONNX Runtime on the CPU).")  # fmt: skip
        elif precision not in PRECISIONS:
            message = (f"--precision {short_repr(precision)} is not known; expected {' or '.join(PRECISIONS)}. "
                       "Fix: omit it for fp32, or pass --precision int8 with --backend onnx.")  # fmt: skip
        else:  # a precision the backend does not have (int8 on torch)
            message = (f"--precision {precision} needs --backend onnx, found --backend {backend}; expected fp32 with "
                       f"--backend {backend}. Fix: add --backend onnx, or drop --precision (--dtype sets the torch precision).")  # fmt: skip
        raise CliError(message, EXIT_USAGE) from exc


@contextlib.contextmanager
def onnx_extra_errors(backend: str) -> Iterator[None]:
    """With ``--backend onnx``, a missing ``m3-rag[onnx]`` extra (ImportError) becomes a one-line error."""
    try:
        yield
    except ImportError as exc:
        if backend != "onnx":
            raise
        from m3_rag.backends import ONNX_EXTRA

        reason = str(exc).split(" Fix:")[0].rstrip(". ") or type(exc).__name__
        raise CliError(f"--backend onnx needs the extra {ONNX_EXTRA} ({reason}). "
                       f'Fix: pip install "{ONNX_EXTRA}", or drop --backend onnx.') from exc  # fmt: skip


def load_encoder(options: ModelOptions) -> Any:
    backend, precision = check_backend_options(options.backend, options.precision)  # typed; ModelOptions checked them
    from transformers.utils import logging as hf_logging

    from m3_rag import M3Encoder

    hf_logging.disable_progress_bar()  # our own bars are the ones that matter
    # An unknown or unavailable --device is a ValueError from the encoder, raised before any weights are read.
    try:
        with onnx_extra_errors(backend):
            return M3Encoder.from_pretrained(options.name, device=options.device, dtype=options.dtype,
                                             backend=backend, precision=precision)  # fmt: skip
    except RuntimeError as exc:  # torch or transformers failing inside the load; the message says why
        where = f" on device {options.device!r}" if options.device else ""
        raise CliError(f"cannot load model {options.name!r}{where}: {exc}") from exc


def open_store(encoder: Any, options: StoreOptions, *, create: bool) -> Any:
    """Open the collection; with ``create=False`` a missing index is an error, not a new empty one."""
    from m3_rag.store import Connection, M3Store

    if options.url:
        from qdrant_client import QdrantClient

        client = QdrantClient(url=options.url, api_key=options.api_key)
        try:
            exists = client.collection_exists(options.collection)
        except Exception as exc:  # connection refused, DNS, auth: all mean "cannot use this server"
            raise CliError(f"cannot reach Qdrant at {options.url}: {type(exc).__name__}: {exc}. Fix: check --url.") from exc
        if not exists and not create:
            raise CliError(f"no collection {options.collection!r} on {options.url}. Fix: run 'm3-rag index PATH --url {options.url}' first.")
        if exists and (options.shard_number or options.replication_factor):
            print(
                f"warning: collection {options.collection!r} already exists on {options.url}; --shards/--replicas "
                "apply only when it is created (change them in Qdrant, or index into a new --collection).",
                file=sys.stderr,
            )
        connection = Connection(client=client, shard_number=options.shard_number,
                                replication_factor=options.replication_factor)  # fmt: skip
        return M3Store(encoder, connection=connection, collection=options.collection, **_colbert(options))
    if options.shard_number or options.replication_factor:
        raise CliError("--shards/--replicas need a Qdrant server (--url); an Edge folder is one local shard.", EXIT_USAGE)
    if not create:
        require_index(options)
    return M3Store(encoder, connection=Connection(path=options.path), collection=options.collection, **_colbert(options))


def _colbert(options: StoreOptions) -> dict[str, Any]:
    return {"colbert_datatype": options.colbert_datatype, "colbert_pool_factor": options.colbert_pool_factor,
            "dense_quantization": options.dense_quantization}  # fmt: skip


def require_index(options: StoreOptions) -> None:
    """An Edge index must exist at ``--path``/``--collection`` (server collections are checked on open)."""
    if options.url is None and not (options.path / options.collection).is_dir():
        raise CliError(
            f"no index at {options.describe()}. Fix: run 'm3-rag index PATH' first, or pass --path/--collection of an existing index."
        )


def parse_filter_json(text: str | None) -> Any:
    """A ``--filter`` JSON object (Mongo style) as a validated filter node, or None."""
    if text is None:
        return None
    from m3_rag.store.filters import parse_filter

    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"--filter is not valid JSON ({exc.msg} at column {exc.colno}); expected an object such as "
            '\'{"year": {"$gte": 2020}}\'.',
            EXIT_USAGE,
        ) from exc
    try:
        return parse_filter(spec)
    except (ValueError, TypeError) as exc:
        raise CliError(f"--filter: {exc}", EXIT_USAGE) from exc


def check_mode(mode: str) -> str:
    from m3_rag.store import MODES

    if mode not in MODES:
        raise CliError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}.", EXIT_USAGE)
    return mode
