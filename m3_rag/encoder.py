"""The BGE-M3 encoder: dense, sparse and ColBERT outputs from one forward pass.

Semantics follow FlagEmbedding 1.4.2's ``BGEM3FlagModel`` exactly (checked by the parity
tests); the speed comes from token-budget batching and post-processing that stays on the
device (no Python loop over tokens, one host transfer per batch).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F

from m3_rag.backends import Backend, Precision, check_backend
from m3_rag.batching import token_budget_batches
from m3_rag.devices import resolve_device
from m3_rag.heads import HeadOutputs, colbert_token_vectors, pool_dense, sparse_token_weights
from m3_rag.loading import (
    DEFAULT_MODEL,
    LengthLimit,
    ModelFiles,
    backbone_max_length,
    load_backbone,
    load_heads,
    resolve_model,
)
from m3_rag.types import ALL_OUTPUTS, M3Output, OutputName, SparseVector, require_output, validate_outputs
from m3_rag.validation import check_text, check_texts, short_repr

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["M3Encoder", "EncoderConfig", "EncoderStats", "PairScores"]

# Tokens per batch (batch size x longest text). CPU gains nothing from bigger batches.
DEFAULT_BUDGET = {"cuda": 65536, "cpu": 8192}
MCLS_STRIDE = 256  # BGE-M3 paper, appendix B.2: a CLS token every 256 tokens
# Default max lengths (BGE-M3's), capped to what the model can read (see backbone_max_length).
DEFAULT_QUERY_MAX_LENGTH = 512
DEFAULT_DOCUMENT_MAX_LENGTH = 8192


@dataclass(frozen=True)
class EncoderConfig:
    name_or_path: str
    device: str
    dtype: str
    pooling: str  # "cls" or "mean"
    query_max_length: int = 512
    document_max_length: int = 8192
    batch_tokens: int = 8192
    mcls: bool = False  # multiple CLS for long documents (paper appendix B.2)
    default_weights: tuple[float, float, float] = (0.4, 0.2, 0.4)
    # The longest input the backbone can read (None: no limit known); lengths above it raise.
    model_max_length: int | None = None
    backend: Backend = "torch"  # "torch", or "onnx" (ONNX Runtime on the CPU, see m3_rag.onnx)
    precision: Precision = "fp32"  # "fp32", or "int8" (the ONNX backend's quantised backbone)


@dataclass
class EncoderStats:
    """Counters of the work done (tests use them to prove a text is encoded once)."""

    forward_passes: int = 0
    texts_encoded: int = 0
    tokens_encoded: int = 0
    texts_truncated: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, passes: int = 0, texts: int = 0, tokens: int = 0, truncated: int = 0) -> None:
        with self._lock:
            self.forward_passes += passes
            self.texts_encoded += texts
            self.tokens_encoded += tokens
            self.texts_truncated += truncated


@dataclass(frozen=True)
class PairScores:
    """Scores of (query, passage) pairs, named as FlagEmbedding's ``compute_score`` keys them."""

    dense: np.ndarray
    sparse: np.ndarray
    colbert: np.ndarray
    sparse_dense: np.ndarray
    colbert_sparse_dense: np.ndarray


class M3Encoder:
    """Encode texts into BGE-M3's dense, sparse and ColBERT representations.

    Build one with :meth:`from_pretrained`. Instances are safe to share between threads.
    """

    outputs: tuple[OutputName, ...] = ALL_OUTPUTS

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        colbert_linear: torch.nn.Linear,
        sparse_linear: torch.nn.Linear,
        config: EncoderConfig,
    ) -> None:
        self.model: PreTrainedModel = model.eval()
        self.tokenizer = tokenizer
        self.colbert_linear = colbert_linear.eval()
        self.sparse_linear = sparse_linear.eval()
        limit = backbone_max_length(model.config, tokenizer)
        if config.model_max_length is not None and (limit.tokens is None or config.model_max_length < limit.tokens):
            limit = LengthLimit(config.model_max_length, f"its EncoderConfig sets model_max_length={config.model_max_length}")
        self._limit = limit
        if config.model_max_length != limit.tokens:
            config = dataclasses.replace(config, model_max_length=limit.tokens)
        self.config = config
        for length, what in ((config.query_max_length, "query_max_length"), (config.document_max_length, "document_max_length")):
            self._check_length(length, what)
        self.stats = EncoderStats()
        self._device = torch.device(config.device)
        self._budget = config.batch_tokens
        self._tokenizer_lock = threading.Lock()  # HF fast tokenizers are not re-entrant
        self._budget_lock = threading.Lock()
        # FlagEmbedding drops these ids from the lexical weights. A BERT tokenizer has no eos
        # but a [SEP]; in XLM-R sep == eos, so adding sep changes nothing there.
        special = (tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.sep_token_id,
                   tokenizer.pad_token_id, tokenizer.unk_token_id)  # fmt: skip
        self._unused_ids = torch.tensor(sorted({i for i in special if i is not None}), device=self._device)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._cls_id = tokenizer.cls_token_id
        empty = tokenizer("", add_special_tokens=True)["input_ids"]
        self._n_prefix = 1 if empty and empty[0] == self._cls_id else 0
        self._n_suffix = len(empty) - self._n_prefix

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        query_max_length: int | None = None,
        document_max_length: int | None = None,
        batch_tokens: int | None = None,
        mcls: bool = False,
        cache_dir: str | None = None,
        backend: Backend = "torch",
        precision: Precision = "fp32",
        onnx_cache_dir: str | Path | None = None,
    ) -> M3Encoder:
        """Load a BGE-M3-layout model: a local dir, a hub id (cached or reachable), or ``"m3-mini"``.

        ``device`` defaults to CUDA when present; ``dtype`` to float16 on CUDA (``"bfloat16"``
        works too) and float32 on CPU. Max lengths default to 512 (queries) and 8192
        (documents), capped to the longest input the backbone can read
        (:attr:`model_max_length`: 8192 for BGE-M3, 512 for m3-mini); an explicit value above
        that limit raises ``ValueError``. An unknown or unavailable ``device`` raises ``ValueError``
        before anything is downloaded or read.

        ``backend="onnx"`` (extra ``m3-rag[onnx]``) runs the backbone and the three heads as one
        ONNX Runtime graph on the CPU, exported on first use and cached in ``onnx_cache_dir``
        (default ``~/.cache/m3-rag/onnx``, see :mod:`m3_rag.onnx`); ``precision="int8"`` quantises its
        backbone. Tokenisation and post-processing are the torch backend's, so fp32 outputs match it.
        """
        check_backend(backend, precision)
        if backend == "onnx":
            from m3_rag.onnx.runtime import load_onnx_encoder  # ImportError naming m3-rag[onnx] if it is missing

            return load_onnx_encoder(
                name_or_path, device=device, dtype=dtype, query_max_length=query_max_length,
                document_max_length=document_max_length, batch_tokens=batch_tokens, mcls=mcls, cache_dir=cache_dir,
                precision=precision, onnx_cache_dir=onnx_cache_dir,
            )  # fmt: skip
        dev = resolve_device(device)
        torch_dtype = _resolve_dtype(dtype, dev)
        files: ModelFiles = resolve_model(name_or_path, cache_dir=cache_dir)
        model, tokenizer = load_backbone(files.backbone_dir, dtype=torch_dtype)
        colbert, sparse = load_heads(files.heads_dir, model.config.hidden_size)
        config = build_config(
            name_or_path, files, backbone_max_length(model.config, tokenizer), device=dev, dtype=torch_dtype,
            query_max_length=query_max_length, document_max_length=document_max_length, batch_tokens=batch_tokens,
            mcls=mcls,
        )  # fmt: skip
        # Heads stay float32: they are cheap, and their outputs are float32 anyway.
        return cls(model.to(dev), tokenizer, colbert.to(dev), sparse.to(dev), config)

    # ------------------------------------------------------------------------------------ sizes
    @property
    def dense_dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def colbert_dim(self) -> int:
        return int(self.colbert_linear.out_features)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def model_max_length(self) -> int | None:
        """The longest input (tokens, special ones included) the backbone can read; None if unknown."""
        return self.config.model_max_length

    @property
    def query_max_length(self) -> int:
        """Tokens a query keeps by default (longer ones are truncated and reported)."""
        return self.config.query_max_length

    @property
    def document_max_length(self) -> int:
        """Tokens a document keeps by default (longer ones are truncated and reported)."""
        return self.config.document_max_length

    # --------------------------------------------------------------------------------- encoding
    def encode_queries(
        self,
        texts: Sequence[str],
        *,
        outputs: Collection[str] = ALL_OUTPUTS,
        max_length: int | None = None,
        show_progress: bool = False,
    ) -> M3Output:
        """Encode queries (default maximum length :attr:`query_max_length`, 512 or the model's limit)."""
        return self.encode(texts, outputs=outputs, max_length=self.config.query_max_length if max_length is None else max_length,
                           show_progress=show_progress)  # fmt: skip

    def encode_documents(
        self,
        texts: Sequence[str],
        *,
        outputs: Collection[str] = ALL_OUTPUTS,
        max_length: int | None = None,
        show_progress: bool = False,
        mcls: bool | None = None,
    ) -> M3Output:
        """Encode documents (default :attr:`document_max_length`, 8192 or the model's limit; optional multi-CLS)."""
        return self.encode(texts, outputs=outputs, max_length=self.config.document_max_length if max_length is None else max_length,
                           show_progress=show_progress, mcls=self.config.mcls if mcls is None else mcls)  # fmt: skip

    def encode(
        self,
        texts: Sequence[str],
        *,
        outputs: Collection[str] = ALL_OUTPUTS,
        max_length: int | None = None,
        show_progress: bool = False,
        mcls: bool = False,
    ) -> M3Output:
        """Encode ``texts`` to the requested ``outputs`` in input order, one forward pass per batch.

        ``max_length`` defaults to :attr:`query_max_length`; above :attr:`model_max_length` it raises.
        """
        wanted = validate_outputs(outputs)
        if max_length is None:
            max_length = self.config.query_max_length
        self._check_length(max_length, "max_length")
        texts = check_texts(texts)
        ids, truncated = self._tokenize(texts, max_length, mcls)
        n = len(texts)
        dense = np.zeros((n, self.dense_dim), dtype=np.float32) if "dense" in wanted else None
        sparse: list[SparseVector | None] | None = [None] * n if "sparse" in wanted else None
        colbert: list[np.ndarray | None] | None = [None] * n if "colbert" in wanted else None
        lengths = [len(x) for x in ids]

        from tqdm.auto import tqdm

        with tqdm(total=n, desc="Encoding", unit="text", disable=not show_progress) as bar:
            pending = token_budget_batches(lengths, self._budget)
            while pending:
                batch = pending.pop(0)
                try:
                    result = self._encode_batch([ids[i] for i in batch], wanted, mcls)
                except torch.cuda.OutOfMemoryError:
                    # Back off and retry what is left with a smaller token budget.
                    torch.cuda.empty_cache()
                    self._shrink_budget(len(batch) * lengths[batch[0]])
                    rest = batch + [i for b in pending for i in b]
                    pending = token_budget_batches([lengths[i] for i in rest], self._budget)
                    pending = [[rest[j] for j in b] for b in pending]
                    continue
                for slot, i in enumerate(batch):
                    if dense is not None:
                        dense[i] = require_output(result.dense, "dense")[slot]
                    if sparse is not None:
                        sparse[i] = require_output(result.sparse, "sparse")[slot]
                    if colbert is not None:
                        colbert[i] = require_output(result.colbert, "colbert")[slot]
                self.stats.add(passes=1, texts=len(batch), tokens=sum(lengths[i] for i in batch))
                bar.update(len(batch))
        self.stats.add(truncated=int(truncated.sum()))
        # The loop above fills every slot, so no None is left in the lists.
        return M3Output(
            dense=dense,
            sparse=cast("list[SparseVector] | None", sparse),
            colbert=cast("list[np.ndarray] | None", colbert),
            token_counts=np.asarray(lengths, dtype=np.int64),
            truncated=truncated,
        )

    def compute_score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        weights: Sequence[float] = (1.0, 1.0, 1.0),
        query_max_length: int | None = None,
        document_max_length: int | None = None,
    ) -> PairScores:
        """Score (query, passage) pairs in every mode, as FlagEmbedding's ``compute_score`` does.

        ``weights`` (dense, sparse, colbert): three finite non-negative numbers with a positive sum.
        """
        from m3_rag.scoring import combine_scores, lexical_score, maxsim_score
        from m3_rag.store.queries import check_weights  # the store's rule; lazy: the store is optional here

        weights = check_weights(weights, "weights")
        if weights[0] + weights[1] <= 0:  # sparse_dense divides by them: 0/0 would be NaN
            raise ValueError(
                f"weights is {weights}: dense and sparse are both 0, so the sparse_dense score has no weight; expected "
                "a positive dense or sparse weight. Fix: pass e.g. (0.4, 0.2, 0.4), or read .colbert for ColBERT alone."
            )
        if isinstance(pairs, (str, bytes)) or (isinstance(pairs, tuple) and len(pairs) == 2 and isinstance(pairs[0], str)):
            raise TypeError(f"pairs is one pair or a string ({short_repr(pairs)}); expected a list of (query, passage) tuples. "
                            "Fix: pass [(query, passage)].")  # fmt: skip
        pairs = list(pairs)
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(
                    f"pairs[{i}] is {type(pair).__name__} ({short_repr(pair)}); expected a (query, passage) tuple of two strings. "
                    "Fix: pass [(query, passage), ...]."
                )
            check_text(pair[0], f"pairs[{i}][0] (the query)")
            check_text(pair[1], f"pairs[{i}][1] (the passage)")
        for length, what in ((query_max_length, "query_max_length"), (document_max_length, "document_max_length")):
            if length is not None:
                self._check_length(length, what)
        q = self.encode_queries([p[0] for p in pairs], max_length=query_max_length)
        d = self.encode_documents([p[1] for p in pairs], max_length=document_max_length)
        dense = np.einsum("ij,ij->i", require_output(q.dense, "dense"), require_output(d.dense, "dense")).astype(np.float32)
        q_sparse, d_sparse = require_output(q.sparse, "sparse"), require_output(d.sparse, "sparse")
        sparse = np.array([lexical_score(a, b) for a, b in zip(q_sparse, d_sparse, strict=True)], dtype=np.float32)
        q_colbert, d_colbert = require_output(q.colbert, "colbert"), require_output(d.colbert, "colbert")
        colbert = np.array([maxsim_score(a, b) for a, b in zip(q_colbert, d_colbert, strict=True)], dtype=np.float32)
        return PairScores(
            dense=dense,
            sparse=sparse,
            colbert=colbert,
            sparse_dense=combine_scores(dense, sparse, weights=weights),
            colbert_sparse_dense=combine_scores(dense, sparse, colbert, weights=weights),
        )

    # -------------------------------------------------------------------------------- internals
    def _tokenize(self, texts: list[str], max_length: int, mcls: bool) -> tuple[list[list[int]], np.ndarray]:
        if not texts:
            return [], np.zeros(0, dtype=bool)
        with self._tokenizer_lock:
            # Untruncated, so that truncation can be counted; truncation below matches HF's
            # (cut the content, keep the special tokens).
            encoded = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        keep = max_length - self._n_prefix - self._n_suffix
        if keep < 0:
            raise ValueError(
                f"max_length {max_length} leaves no room for the {self._n_prefix + self._n_suffix} special tokens; "
                f"expected at least {self._n_prefix + self._n_suffix}"
            )
        truncated = np.zeros(len(texts), dtype=bool)
        out: list[list[int]] = []
        for i, ids in enumerate(encoded):
            if mcls:
                ids = self._insert_cls(ids, max_length)
            if len(ids) > max_length:
                truncated[i] = True
                ids = ids[: self._n_prefix + keep] + ids[len(ids) - self._n_suffix :]
            out.append(ids)
        return out, truncated

    def _insert_cls(self, ids: list[int], max_length: int) -> list[int]:
        """A CLS token at every multiple of 256 positions (the first one is the usual CLS)."""
        out: list[int] = []
        for token in ids:
            if out and len(out) % MCLS_STRIDE == 0:
                out.append(self._cls_id)
            out.append(token)
        return out

    @torch.inference_mode()
    def _encode_batch(self, batch_ids: list[list[int]], wanted: tuple[str, ...], mcls: bool) -> M3Output:
        dev = self._device
        longest = max(len(x) for x in batch_ids)
        input_ids = torch.full((len(batch_ids), longest), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch_ids), longest), dtype=torch.long)
        for row, ids in enumerate(batch_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        input_ids = input_ids.to(dev, non_blocking=True)
        mask = mask.to(dev, non_blocking=True)
        heads = self._forward(input_ids, mask, wanted, mcls)

        # The post-processing below is the same for every backend (see m3_rag.heads).
        valid = mask.bool()
        cls_positions = (input_ids == self._cls_id) & valid if mcls else None
        host: dict[str, torch.Tensor] = {}
        if "dense" in wanted:
            host["dense"] = heads.dense(valid, cls_positions)
        if "sparse" in wanted:
            keys, weights = self._sparse(heads.token_weights(), input_ids, valid)
            host["sparse_keys"], host["sparse_values"] = keys, weights
        if "colbert" in wanted:
            rows = valid.clone()
            rows[:, 0] = False  # the CLS state is the dense vector, not a ColBERT token
            if cls_positions is not None:
                rows &= ~cls_positions
            host["colbert"] = F.normalize(heads.colbert(rows), dim=-1)
            host["colbert_counts"] = rows.sum(dim=1)
        host = {k: v.to("cpu", non_blocking=True) for k, v in host.items()}
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)  # one sync for all the copies above
        return self._unpack(host, len(batch_ids), wanted)

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, wanted: tuple[str, ...], mcls: bool) -> HeadOutputs:
        """One forward pass of the backbone; the heads run on demand (the ONNX encoder overrides this)."""
        hidden = self.model(input_ids=input_ids, attention_mask=mask, return_dict=True).last_hidden_state
        return HeadOutputs(
            dense=lambda valid, cls_positions: pool_dense(hidden, valid, cls_positions, self.config.pooling),
            token_weights=lambda: sparse_token_weights(self.sparse_linear, hidden),
            colbert=lambda rows: colbert_token_vectors(self.colbert_linear, hidden[rows]),
        )

    def _sparse(self, weights: torch.Tensor, input_ids: torch.Tensor, valid: torch.Tensor):
        """Max ``weights`` [B, L] per (text, token id), on the device: ``unique`` + ``scatter_reduce``."""
        keep = valid & (weights > 0) & ~torch.isin(input_ids, self._unused_ids)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(input_ids)
        keys = rows[keep] * self.vocab_size_for_keys + input_ids[keep]
        unique_keys, inverse = torch.unique(keys, return_inverse=True)  # sorted: by text, then token id
        best = torch.zeros(unique_keys.shape[0], dtype=weights.dtype, device=weights.device)
        best = best.scatter_reduce(0, inverse, weights[keep], reduce="amax", include_self=False)
        return unique_keys, best

    @property
    def vocab_size_for_keys(self) -> int:
        # Token ids can exceed config.vocab_size when a tokenizer adds tokens; size keys by both.
        return max(self.vocab_size, len(self.tokenizer))

    def _unpack(self, host: dict[str, torch.Tensor], n: int, wanted: tuple[str, ...]) -> M3Output:
        dense = host["dense"].numpy() if "dense" in wanted else None
        sparse = None
        if "sparse" in wanted:
            keys = host["sparse_keys"].numpy()
            values = host["sparse_values"].numpy().astype(np.float32, copy=False)
            span = self.vocab_size_for_keys
            text_of = keys // span
            bounds = np.searchsorted(text_of, np.arange(n + 1))
            sparse = [
                SparseVector((keys[a:b] % span).astype(np.int64), values[a:b].copy())
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)
            ]
        colbert = None
        if "colbert" in wanted:
            flat = host["colbert"].numpy()
            ends = np.cumsum(host["colbert_counts"].numpy())
            colbert = np.split(flat, ends[:-1]) if n else []
        return M3Output(dense=dense, sparse=sparse, colbert=colbert)

    def _check_length(self, value: int, what: str) -> None:
        _check_max_length(value, what)
        _check_within_limit(value, what, self._limit, self.config.name_or_path)

    def _shrink_budget(self, failed_tokens: int) -> None:
        with self._budget_lock:
            new = min(self._budget, failed_tokens) // 2
            if new < 1:
                raise torch.cuda.OutOfMemoryError("out of GPU memory even for a single text; shorten max_length")
            self._budget = new

    def __repr__(self) -> str:
        c = self.config
        backend = f", backend={c.backend!r}, precision={c.precision!r}" if c.backend != "torch" else ""
        return f"M3Encoder({c.name_or_path!r}, device={c.device!r}, dtype={c.dtype!r}, pooling={c.pooling!r}{backend})"


def build_config(
    name_or_path: str | Path,
    files: ModelFiles,
    limit: LengthLimit,
    *,
    device: torch.device,
    dtype: torch.dtype,
    query_max_length: int | None,
    document_max_length: int | None,
    batch_tokens: int | None,
    mcls: bool,
    backend: Backend = "torch",
    precision: Precision = "fp32",
) -> EncoderConfig:
    """The :class:`EncoderConfig` of a loaded model (every backend): max lengths checked against ``limit``."""
    lengths = {}
    for given, default, what in ((query_max_length, DEFAULT_QUERY_MAX_LENGTH, "query_max_length"),
                                 (document_max_length, DEFAULT_DOCUMENT_MAX_LENGTH, "document_max_length")):  # fmt: skip
        if given is None:
            lengths[what] = default if limit.tokens is None else min(default, limit.tokens)
        else:
            _check_max_length(given, what)
            _check_within_limit(given, what, limit, str(name_or_path))
            lengths[what] = given
    return EncoderConfig(
        name_or_path=str(name_or_path),
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        pooling=files.pooling,
        query_max_length=lengths["query_max_length"],
        document_max_length=lengths["document_max_length"],
        batch_tokens=batch_tokens or DEFAULT_BUDGET["cuda" if device.type == "cuda" else "cpu"],
        mcls=mcls,
        default_weights=files.weights,
        model_max_length=limit.tokens,
        backend=backend,
        precision=precision,
    )


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}  # fmt: skip
    if not isinstance(dtype, str) or dtype not in table:
        raise ValueError(
            f"dtype {short_repr(dtype)} is not supported; expected one of {sorted(table)}. Fix: omit dtype, or pass 'float32'."
        )
    return table[dtype]


def _check_max_length(value: int, what: str) -> None:
    if not isinstance(value, int) or value < 2:
        raise ValueError(
            f"{what} is {short_repr(value)}; expected a whole number of tokens >= 2 (room for the special tokens). "
            f"Fix: pass e.g. {what}=512."
        )


def _check_within_limit(value: int, what: str, limit: LengthLimit, model: str) -> None:
    """A length the backbone cannot read is an error (it would crash the position embeddings)."""
    if limit.tokens is not None and value > limit.tokens:
        raise ValueError(
            f"{what} is {value}, but model {model!r} reads at most {limit.tokens} tokens ({limit.reason}); "
            f"longer inputs would index past its position embeddings. Fix: pass {what}={limit.tokens} or less, "
            f"or leave it unset to use {limit.tokens} (texts longer than that are truncated and reported)."
        )

