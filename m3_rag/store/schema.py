"""The collection schema: named vectors sized from the encoder, and validation of what exists.

``dense``: cosine, dim H. ``sparse``: no modifier (BGE-M3's lexical score is a plain dot
product of its weights; IDF would change it), token ids as indices. ``colbert``: multivector,
MaxSim, HNSW disabled (rerank only), float16 by default (``colbert_datatype="float32"``
on request), on disk. A dense-only encoder gets only ``dense``. Backends read an existing
collection into :class:`VectorSpec` and :func:`check_schema` compares it with what the
encoder needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from m3_rag.types import ALL_OUTPUTS, OutputName

__all__ = [
    "DENSE",
    "SPARSE",
    "COLBERT",
    "VectorSpec",
    "StoreSchema",
    "SchemaMismatchError",
    "COLBERT_DATATYPES",
    "schema_from_encoder",
    "check_schema",
]

DENSE: OutputName = "dense"
SPARSE: OutputName = "sparse"
COLBERT: OutputName = "colbert"

VectorKind = Literal["dense", "sparse", "multi"]
ColbertDatatype = Literal["float16", "float32"]
#: How ColBERT token vectors are stored. float16 (the default) takes half the disk; float32 is
#: the faster rerank: measured with qdrant-edge-py 0.9.0 on an AVX2/F16C x86 CPU, its MaxSim
#: runs at ~3 G multiply-adds/s on float16 and ~7 G/s on float32 (one core), and the rerank
#: cost is candidates x document tokens x query tokens x dim (benchmarks/store.py).
COLBERT_DATATYPES: tuple[str, ...] = ("float16", "float32")


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
    """What one collection holds: which outputs, at which sizes.

    ``colbert_datatype`` applies when a collection is created; an existing collection keeps the
    datatype it was created with (it changes scores by float16 rounding only, so opening one
    with the other datatype is not a mismatch).
    """

    outputs: tuple[OutputName, ...]
    dense_dim: int
    colbert_dim: int | None = None
    colbert_datatype: ColbertDatatype = "float16"

    def __post_init__(self) -> None:
        if self.colbert_datatype not in COLBERT_DATATYPES:
            raise ValueError(
                f"colbert_datatype={self.colbert_datatype!r}; expected one of {COLBERT_DATATYPES}. "
                "Fix: use 'float16' (half the disk, the default) or 'float32' (faster rerank)."
            )
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
    def has_sparse(self) -> bool:
        return SPARSE in self.outputs

    @property
    def has_colbert(self) -> bool:
        return COLBERT in self.outputs

    def vectors(self) -> dict[str, VectorSpec]:
        specs = {DENSE: VectorSpec(DENSE, "dense", self.dense_dim, "cosine")}
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


def schema_from_encoder(encoder: object, colbert_datatype: ColbertDatatype = "float16") -> StoreSchema:
    """Sizes from the encoder's config (``dense_dim``, ``colbert_dim``), never from a dummy encode.

    The encoder may list what it produces in ``outputs``; without it all three are assumed
    (the M3Encoder protocol), and a missing size then raises.
    """
    outputs = tuple(getattr(encoder, "outputs", ALL_OUTPUTS))
    unknown = [o for o in outputs if o not in ALL_OUTPUTS]
    if unknown:
        raise ValueError(f"encoder.outputs has unknown names {unknown}; expected a subset of {ALL_OUTPUTS}.")
    dense_dim = getattr(encoder, "dense_dim", None)
    if not isinstance(dense_dim, int) or dense_dim <= 0:
        raise ValueError(
            f"encoder.dense_dim is {dense_dim!r}; expected a positive int. "
            "Fix: pass an M3Encoder or an object with dense_dim set from its model config."
        )
    colbert_dim = getattr(encoder, "colbert_dim", None) if COLBERT in outputs else None
    ordered = tuple(o for o in ALL_OUTPUTS if o in outputs)
    return StoreSchema(outputs=ordered, dense_dim=dense_dim, colbert_dim=colbert_dim, colbert_datatype=colbert_datatype)


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
