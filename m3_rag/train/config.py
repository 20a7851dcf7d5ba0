"""Options of a fine-tuning run (one frozen dataclass, saved beside every checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes; same config + seed -> same heads."""

    data: tuple[str, ...]  # jsonl files of {"query", "pos", "neg"} rows
    output_dir: str
    model: str = ""  # an M3-layout dir, a hub id, "m3-mini", or a plain HF encoder dir with new_heads=True
    backbone_package: str | None = None  # or: a Python package shipping the backbone (new_heads=True)
    new_heads: bool = False  # start fresh heads (the model has none, or to retrain them)
    pooling: str | None = None  # dense pooling; None keeps the model's ("cls" for BGE-M3)
    colbert_init: str = "identity"  # fresh ColBERT head: "identity" or "random"
    sparse_init_bias: float = 0.1  # fresh sparse head: weight 0, this bias
    heads_only: bool = False  # freeze the encoder; its states are computed once and cached
    # Modes trained. All three: BGE-M3's unified loss. A subset: the mean InfoNCE of those modes
    # alone (no ensemble, no distillation), e.g. ("sparse",) to warm up a fresh sparse head cheaply.
    modes: tuple[str, ...] = ("dense", "sparse", "colbert")
    epochs: int = 1
    batch_size: int = 16  # queries per step
    group_size: int = 8  # 1 positive + group_size - 1 negatives per query
    in_batch_negatives: bool = True  # other queries' passages are negatives too
    temperature: float = 0.02
    lr: float = 1e-5  # encoder learning rate
    head_lr: float = 1e-4  # ColBERT head learning rate
    sparse_lr: float | None = None  # sparse head learning rate (None: head_lr)
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    sparse_loss_weight: float = 0.1  # BGE-M3's weight of the sparse InfoNCE/KD terms
    ensemble_sparse_weight: float = 0.3  # s_ens = s_dense + this * s_sparse + s_colbert
    query_max_length: int = 512
    passage_max_length: int = 512
    length_grouped: bool = True  # batches of similar-length queries (less padding)
    gradient_checkpointing: bool = False
    seed: int = 0
    save_steps: int = 0  # checkpoint every N steps for resuming (0: at each epoch end)
    resume: bool = True  # continue from output_dir/checkpoint when one exists
    state_cache_dir: str | None = None  # heads-only: where backbone states are cached
    mode_weights: tuple[float, float, float] | None = None  # shipped (dense, sparse, colbert) weights
    device: str | None = None
    show_progress: bool = True
    extra: dict = field(default_factory=dict)  # free-form notes saved with the config

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs is {self.epochs}, expected >= 1"),
            (self.batch_size >= 1, f"batch_size is {self.batch_size}, expected >= 1"),
            (self.group_size >= 1, f"group_size is {self.group_size}, expected >= 1 (1 positive + negatives)"),
            (self.temperature > 0, f"temperature is {self.temperature}, expected > 0"),
            (self.pooling in (None, "cls", "mean"), f"pooling is {self.pooling!r}, expected 'cls' or 'mean'"),
            (self.colbert_init in ("identity", "random"), f"colbert_init is {self.colbert_init!r}, expected 'identity' or 'random'"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio is {self.warmup_ratio}, expected in [0, 1)"),
            (bool(self.data), "no training data given; expected at least one jsonl file"),
            (bool(self.modes) and set(self.modes) <= {"dense", "sparse", "colbert"},
             f"modes is {self.modes!r}, expected a non-empty subset of ('dense', 'sparse', 'colbert')"),
            (self.mode_weights is None or len(self.mode_weights) == 3, f"mode_weights is {self.mode_weights}, expected 3 numbers"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.group_size == 1 and not self.in_batch_negatives:
            raise ValueError("group_size 1 without in-batch negatives leaves no negatives; raise group_size or enable in-batch negatives")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"] = list(self.data)
        d["modes"] = list(self.modes)
        return d
