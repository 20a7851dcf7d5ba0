"""The collection schema: named vectors sized from the encoder, and validation of what exists.

``dense``: cosine, dim H. ``sparse``: no modifier (BGE-M3's lexical score is a plain dot
product of its weights; IDF would change it), token ids as indices. ``colbert``: multivector,
MaxSim, HNSW disabled (rerank only), on disk, stored as ``colbert_datatype`` after token
pooling by ``colbert_pool_factor`` (:class:`ColbertSettings`). A dense-only encoder gets only
``dense``. Backends read an existing collection into :class:`VectorSpec` and
:func:`check_schema` compares it with what the encoder needs; they read the ColBERT settings
the collection recorded and :meth:`StoreSchema.with_recorded` reconciles them with the options.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from m3_rag.types import ALL_OUTPUTS, Encoder, OutputName, check_encoder

__all__ = [
    "DENSE",
    "SPARSE",
    "COLBERT",
    "VectorSpec",
    "StoreSchema",
    "SchemaMismatchError",
    "COLBERT_DATATYPES",
    "ColbertDatatype",
    "DENSE_QUANTIZATIONS",
    "DenseQuantization",
    "DEFAULT_DENSE_QUANTIZATION",
    "ColbertSettings",
    "DEFAULT_COLBERT",
    "LEGACY_POOL_FACTOR",
    "check_pool_factor",
    "check_dense_quantization",
    "quantization_kind",
    "schema_from_encoder",
    "check_schema",
]

DENSE: OutputName = "dense"
SPARSE: OutputName = "sparse"
COLBERT: OutputName = "colbert"

VectorKind = Literal["dense", "sparse", "multi"]
ColbertDatatype = Literal["float16", "float32", "turbo8", "turbo4"]
#: How ColBERT token vectors are stored, bytes per 1024-dim token measured on Qdrant Edge 0.9
#: (benchmarks/store.py): float32 4096, float16 2048, turbo8 1028, turbo4 516. Turbo8/Turbo4
#: are Qdrant's TurboQuant storage: they replace the originals (a quantized copy beside
#: float originals would add to the disk instead). float32 is the fastest MaxSim.
COLBERT_DATATYPES: tuple[ColbertDatatype, ...] = ("float16", "float32", "turbo8", "turbo4")
DenseQuantization = Literal["int8", "none"]
#: How the dense HNSW index is searched: ``"int8"`` is Qdrant's scalar quantization (an int8
#: copy in RAM, 1 KB per 1024-dim point, beside the float32 originals): HNSW walks the copy and
#: the hits are rescored with the originals, so scores stay exact. Measured on Qdrant Edge 0.9,
#: 10k random 1024-dim points, 10 hits: 0.70 vs 2.71 ms p50 at the same recall (0.608 vs
#: 0.598), and the graph built 5x faster. ``"none"``: m3-rag 0.1.0's float32-only index.
DENSE_QUANTIZATIONS: tuple[DenseQuantization, ...] = ("int8", "none")
DEFAULT_DENSE_QUANTIZATION: DenseQuantization = "int8"


def check_pool_factor(value: object) -> int:
    """``value`` if it is a valid ColBERT pool factor (an int >= 1); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"colbert_pool_factor={value!r} ({type(value).__name__}); expected an int >= 1 (1: no pooling, "
            "f: about 1/f of the document token vectors kept). Fix: pass e.g. colbert_pool_factor=2."
        )
    return value


_Choice = TypeVar("_Choice", bound=str)


def _one_of(name: str, value: object, allowed: tuple[_Choice, ...], fix: str) -> _Choice:
    """``value`` as the member of ``allowed`` it equals; else ValueError naming ``name``."""
    for choice in allowed:
        if value == choice:
            return choice
    raise ValueError(f"{name}={value!r}; expected one of {allowed}. Fix: {fix}")


def check_dense_quantization(value: object) -> DenseQuantization:
    """``value`` if it is a dense quantization m3-rag creates; else ValueError."""
    fix = "use 'int8' (the default: Qdrant's scalar quantization, rescored with the originals) or 'none' (float32 only)."
    return _one_of("dense_quantization", value, DENSE_QUANTIZATIONS, fix)


def _check_datatype(value: object) -> ColbertDatatype:
    fix = "use 'turbo4' (the default), 'turbo8' (twice its bytes), 'float16' or 'float32' (exact float storage)."
    return _one_of("colbert_datatype", value, COLBERT_DATATYPES, fix)


@dataclass(frozen=True)
class ColbertSettings:
    """How a collection stores ColBERT vectors; recorded with it so a reopening process (and
    every later add) uses the same: a collection must not mix pooled and unpooled documents."""

    datatype: ColbertDatatype
    pool_factor: int

    def __post_init__(self) -> None:
        _check_datatype(self.datatype)
        check_pool_factor(self.pool_factor)

    @classmethod
    def validated(cls, datatype: object, pool_factor: object) -> ColbertSettings:
        """The settings of values from outside (options, a collection's records), checked as the
        constructor checks them: ValueError unless they are valid."""
        return cls(_check_datatype(datatype), check_pool_factor(pool_factor))

    def to_json(self) -> dict[str, object]:
        return {"colbert_datatype": self.datatype, "colbert_pool_factor": self.pool_factor}


#: What a new collection gets when the options leave a setting open: the fewest bytes per token
#: among the settings whose nDCG@10 on all 809 SciFact train queries (m3-mini, m3 and
#: hybrid+rerank; no test query) stayed within 0.5 points of float16 unpooled with a bootstrap
#: interval holding 0 (docs/compact-colbert.md): f2 turbo4, 257 B per original token against
#: 2048 (f3 turbo4, 170 B, lost 0.66 points on hybrid+rerank).
DEFAULT_COLBERT = ColbertSettings(datatype="turbo4", pool_factor=2)
#: The pool factor of a collection that recorded none: m3-rag 0.1.0 stored every token (its
#: datatype, float16, is in the vector config like every datatype).
LEGACY_POOL_FACTOR = 1


class SchemaMismatchError(ValueError):
    """An existing collection does not fit the encoder (found / expected / fix in the message)."""


@dataclass(frozen=True)
class VectorSpec:
    """One named vector, backend-neutral. ``size``/``distance``/``comparator`` apply to dense
    and multi vectors, ``modifier`` to sparse ones (``"none"`` or ``"idf"``)."""

    name: str
    kind: VectorKind
    size: int | None = None
    distance: str | None = None  # lower case: "cosine", "dot", ...
    comparator: str | None = None  # "max_sim" for multivectors
    modifier: str | None = None

    def describe(self) -> str:
        if self.kind == "sparse":
            return f"{self.name}: sparse, modifier={self.modifier or 'none'}"
        multi = f", multivector {self.comparator}" if self.kind == "multi" else ""
        return f"{self.name}: {self.size}-dim {self.distance}{multi}"


@dataclass(frozen=True)
class StoreSchema:
    """What one collection holds: which outputs, at which sizes, and how ColBERT is stored.

    ``colbert_datatype`` / ``colbert_pool_factor`` are ``None`` until the collection is open
    when the options leave them to the collection: an existing one's recorded settings, or
    :data:`DEFAULT_COLBERT` for a new one. An explicit option that differs from what an
    existing collection recorded is a :class:`SchemaMismatchError`.
    """

    outputs: tuple[OutputName, ...]
    dense_dim: int
    colbert_dim: int | None = None
    colbert_datatype: ColbertDatatype | None = None
    colbert_pool_factor: int | None = None
    #: None until open, like the ColBERT settings (the store checks the option with
    #: :func:`check_dense_quantization`); an existing collection may hold a kind m3-rag does not
    #: create (e.g. binary, set up on a server): it is kept, named as Qdrant names it.
    dense_quantization: str | None = None

    def __post_init__(self) -> None:
        self._settings_or_default()  # validates the options, before anything is written
        if DENSE not in self.outputs:
            raise ValueError(
                f"the encoder outputs {self.outputs}; the store needs at least 'dense'. "
                "Fix: use an encoder that produces dense vectors."
            )
        if COLBERT in self.outputs and not self.colbert_dim:
            raise ValueError(
                f"the encoder lists 'colbert' in its outputs but has colbert_dim={self.colbert_dim!r}; "
                "expected a positive int. Fix: give the encoder a colbert_dim or drop 'colbert' from its outputs."
            )

    @property
    def colbert(self) -> ColbertSettings:
        """The ColBERT settings in force (after :meth:`for_new_collection`/:meth:`with_recorded`)."""
        if self.colbert_datatype is None or self.colbert_pool_factor is None:
            raise RuntimeError("the collection's ColBERT settings are read when it opens; it is not open yet.")
        return ColbertSettings(self.colbert_datatype, self.colbert_pool_factor)

    def _settings_or_default(self) -> ColbertSettings:
        return ColbertSettings(
            DEFAULT_COLBERT.datatype if self.colbert_datatype is None else self.colbert_datatype,
            DEFAULT_COLBERT.pool_factor if self.colbert_pool_factor is None else self.colbert_pool_factor,
        )

    def for_new_collection(self) -> StoreSchema:
        """This schema with the open settings filled from :data:`DEFAULT_COLBERT` and
        :data:`DEFAULT_DENSE_QUANTIZATION`."""
        settings = self._settings_or_default()
        quantization = self.dense_quantization or DEFAULT_DENSE_QUANTIZATION
        return replace(
            self, colbert_datatype=settings.datatype, colbert_pool_factor=settings.pool_factor,
            dense_quantization=quantization,
        )  # fmt: skip

    def with_recorded_dense(self, collection: str, found: str) -> StoreSchema:
        """This schema with an existing collection's dense quantization (``found``, as read from
        Qdrant's config: ``"int8"``, ``"none"`` or another kind); an explicit option that differs raises."""
        if self.dense_quantization is not None and self.dense_quantization != found:
            raise SchemaMismatchError(
                f"collection {collection!r} searches its dense vectors with quantization {found!r}; the options ask "
                f"for dense_quantization={self.dense_quantization!r}. Qdrant fixes it when the collection is "
                "created. Fix: leave dense_quantization out (None) to use the collection's, or index into a new "
                "collection / path with the new setting."
            )
        return replace(self, dense_quantization=found)

    def with_recorded(self, collection: str, recorded: ColbertSettings) -> StoreSchema:
        """This schema with an existing collection's settings; an explicit option that differs raises."""
        asked = {"colbert_datatype": self.colbert_datatype, "colbert_pool_factor": self.colbert_pool_factor}
        found = recorded.to_json()
        conflicts = [f"{k}={v!r} (the collection has {found[k]!r})" for k, v in asked.items() if v is not None and v != found[k]]
        if conflicts and self.has_colbert:
            raise SchemaMismatchError(
                f"collection {collection!r} stores ColBERT vectors with {found}; the options ask for "
                f"{', '.join(conflicts)}. A collection keeps one setting, so that every document is scored "
                "alike. Fix: leave the option out (None) to use the collection's, or index into a new "
                "collection / path with the new setting."
            )
        return replace(self, colbert_datatype=recorded.datatype, colbert_pool_factor=recorded.pool_factor)

    @property
    def colbert_size(self) -> int:
        """``colbert_dim`` of a schema with ColBERT vectors (``__post_init__`` checked it is set)."""
        if not self.colbert_dim:
            raise ValueError(f"the store's schema has no ColBERT vectors (outputs {self.outputs}); expected 'colbert'.")
        return self.colbert_dim

    @property
    def has_sparse(self) -> bool:
        return SPARSE in self.outputs

    @property
    def has_colbert(self) -> bool:
        return COLBERT in self.outputs

    def vectors(self) -> dict[str, VectorSpec]:
        specs: dict[str, VectorSpec] = {DENSE: VectorSpec(DENSE, "dense", self.dense_dim, "cosine")}
        if self.has_sparse:
            specs[SPARSE] = VectorSpec(SPARSE, "sparse", modifier="none")
        if self.has_colbert:
            specs[COLBERT] = VectorSpec(COLBERT, "multi", self.colbert_dim, "cosine", "max_sim")
        return specs

    def require(self, outputs: tuple[OutputName, ...], what: str) -> None:
        """Raise if ``what`` needs an output this collection does not hold."""
        missing = [o for o in outputs if o not in self.outputs]
        if missing:
            raise ValueError(
                f"{what} needs the {missing} vectors, but this store holds only {list(self.outputs)} "
                "(its encoder produces only those). Fix: search with mode='dense', or build the store "
                "with an encoder that produces dense, sparse and colbert outputs (M3Encoder)."
            )


def schema_from_encoder(
    encoder: Encoder, colbert_datatype: ColbertDatatype | None = None, colbert_pool_factor: int | None = None
) -> StoreSchema:
    """The outputs the encoder lists (``encoder.outputs``) at the sizes of its config (``dense_dim``,
    ``colbert_dim``), never from a dummy encode; an object that is no :class:`Encoder` raises ``TypeError``."""
    encoder = check_encoder(encoder, "the store")
    outputs = tuple(encoder.outputs)
    unknown = [o for o in outputs if o not in ALL_OUTPUTS]
    if unknown:
        raise ValueError(f"encoder.outputs has unknown names {unknown}; expected a subset of {ALL_OUTPUTS}.")
    dense_dim = encoder.dense_dim
    if not isinstance(dense_dim, int) or dense_dim <= 0:
        raise ValueError(
            f"encoder.dense_dim is {dense_dim!r}; expected a positive int. "
            "Fix: pass an M3Encoder or an object with dense_dim set from its model config."
        )
    colbert_dim = encoder.colbert_dim if COLBERT in outputs else None
    ordered = tuple(o for o in ALL_OUTPUTS if o in outputs)
    return StoreSchema(
        outputs=ordered, dense_dim=dense_dim, colbert_dim=colbert_dim,
        colbert_datatype=colbert_datatype, colbert_pool_factor=colbert_pool_factor,
    )  # fmt: skip


def _key(spec: VectorSpec) -> tuple:
    # An absent sparse modifier means none, as in Qdrant.
    modifier = (spec.modifier or "none") if spec.kind == "sparse" else None
    return (spec.kind, spec.size, spec.distance, spec.comparator, modifier)


def check_schema(collection: str, found: Mapping[str, VectorSpec], schema: StoreSchema) -> None:
    """Raise :class:`SchemaMismatchError` unless ``found`` holds exactly the vectors ``schema`` needs."""
    expected = schema.vectors()
    problems: list[str] = []
    for name, want in expected.items():
        have = found.get(name)
        if have is None:
            problems.append(f"missing vector {want.describe()!r}")
        elif _key(have) != _key(want):
            problems.append(f"vector {have.describe()!r} where {want.describe()!r} is needed")
    for name in found:
        if name not in expected:
            problems.append(f"extra vector {found[name].describe()!r} that this encoder does not produce")
    if problems:
        have_desc = "; ".join(v.describe() for v in found.values()) or "no vectors"
        want_desc = "; ".join(v.describe() for v in expected.values())
        raise SchemaMismatchError(
            f"collection {collection!r} does not fit this encoder: {', '.join(problems)}. "
            f"Found [{have_desc}], expected [{want_desc}]. Fix: open it with the encoder it was built "
            "with, or use a new collection name / path (or delete this one) to index with this encoder."
        )


def quantization_kind(config: Mapping[str, object] | None) -> str:
    """The dense quantization a Qdrant ``quantization_config`` (as JSON: ``{"scalar": {...}}``)
    describes: ``"int8"`` for scalar, the config's own key for other kinds, ``"none"`` if absent."""
    if not config:
        return "none"
    kind = next(iter(config))
    return "int8" if kind == "scalar" else str(kind)
