"""Unified fine-tuning of an M3-layout model (BGE-M3's recipe), seeded and resumable.

One step: ``batch_size`` queries, each with a group of 1 positive + ``group_size - 1``
negatives (with in-batch negatives every query is scored against all ``batch_size *
group_size`` passages), the three modes' scores, :func:`m3_rag.train.losses.m3_loss`, one
optimizer step. Batch order and sampling depend only on ``(seed, epoch, step)``, so a run
resumed from its checkpoint computes exactly what an uninterrupted run computes.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from m3_rag.loading import M3_CONFIG, ModelFiles, _package_model_dir, load_backbone, resolve_model
from m3_rag.train.config import TrainConfig
from m3_rag.train.data import TrainExample, load_jsonl
from m3_rag.train.losses import LossWeights, M3Loss, m3_loss, subset_loss
from m3_rag.train.model import HeadSpec, M3Heads, colbert_scores, dense_scores, head_outputs, sparse_scores
from m3_rag.train.states import StateCache, StateStore

__all__ = ["TrainResult", "Trainer", "train"]

CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    steps: int
    last_loss: dict[str, float]
    resumed_from_step: int


@dataclass(frozen=True)
class _Row:
    query: int  # index into the query texts
    pos: tuple[int, ...]  # indices into the passage texts
    neg: tuple[int, ...]
    pos_scores: tuple[float, ...] | None
    neg_scores: tuple[float, ...] | None


class Trainer:
    """Holds the model, data and optimizer of one run; :meth:`train` runs it to the end."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.files: ModelFiles = _resolve(config)
        self.backbone, self.tokenizer = load_backbone(self.files.backbone_dir, dtype=torch.float32)
        self.backbone.to(self.device)
        hidden = int(self.backbone.config.hidden_size)
        if config.new_heads:
            self.heads = M3Heads.fresh(
                hidden, colbert_init=config.colbert_init, sparse_bias=config.sparse_init_bias, seed=config.seed
            )
        else:
            try:
                self.heads = M3Heads.load(self.files.heads_dir, hidden)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"{exc} Or train new heads: pass new_heads=True (--new-heads).") from exc
        self.heads.to(self.device)
        self.pooling = config.pooling or self.files.pooling
        self.spec = HeadSpec.from_tokenizer(self.tokenizer, self.pooling, int(self.backbone.config.vocab_size))
        self.loss_weights = LossWeights(config.ensemble_sparse_weight, config.sparse_loss_weight)

        examples: list[TrainExample] = [ex for path in config.data for ex in load_jsonl(path)]
        self.queries, self.passages, self.rows = _index(examples)
        self.teacher = examples[0].has_teacher
        self.query_states: StateCache | None
        self.passage_states: StateCache | None
        if config.heads_only:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            self.backbone.eval()
            self.query_states, self.passage_states = self._cached_states()
        else:
            self.query_states = self.passage_states = None
            if config.gradient_checkpointing:
                self.backbone.gradient_checkpointing_enable()

        groups = []
        if "colbert" in config.modes:
            groups.append({"params": list(self.heads.colbert_linear.parameters()), "lr": config.head_lr})
        if "sparse" in config.modes:
            groups.append({"params": list(self.heads.sparse_linear.parameters()), "lr": config.sparse_lr or config.head_lr})
        if not config.heads_only:
            groups.append({"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": config.lr})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.rows) / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        warmup = int(self.total_steps * config.warmup_ratio)

        def schedule(step: int) -> float:  # linear warm-up, then linear decay to 0
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (self.total_steps - step) / max(1, self.total_steps - warmup))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.step = 0

    # ------------------------------------------------------------------------------- states
    def _cached_states(self) -> tuple[StateCache, StateCache]:
        root = Path(self.config.state_cache_dir) if self.config.state_cache_dir else self.out / "states"
        c = self.config
        q_store = StateStore(root, self.files.backbone_dir, c.query_max_length)
        p_store = StateStore(root, self.files.backbone_dir, c.passage_max_length)
        q = q_store.get(self.backbone, self.tokenizer, self.queries, show_progress=c.show_progress, desc="query states")
        p = p_store.get(self.backbone, self.tokenizer, self.passages, show_progress=c.show_progress, desc="passage states")
        return q.to_float32(), p.to_float32()

    def _hidden(self, texts_idx: Sequence[int], kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(hidden, input_ids, mask)`` of query or passage texts, from the cache or the live backbone."""
        cache = self.query_states if kind == "query" else self.passage_states
        if cache is not None:
            h, ids, mask = cache.batch(texts_idx, self.tokenizer.pad_token_id)
            return h.to(self.device), ids.to(self.device), mask.to(self.device)
        texts = [(self.queries if kind == "query" else self.passages)[i] for i in texts_idx]
        max_length = self.config.query_max_length if kind == "query" else self.config.passage_max_length
        enc = self.tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        return self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state, ids, mask

    # ------------------------------------------------------------------------------ batches
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Row indices of each step of ``epoch``; depends only on the seed and the epoch."""
        rng = random.Random(f"{self.config.seed}-order-{epoch}")
        order = list(range(len(self.rows)))
        rng.shuffle(order)
        b = self.config.batch_size
        if self.config.length_grouped:
            # Sort within mega-batches of 50 steps, then shuffle the batches: similar lengths
            # share a batch (less padding) while the epoch order stays random.
            q_len = [len(self.queries[self.rows[i].query]) for i in range(len(self.rows))]
            mega = 50 * b
            order = [i for s in range(0, len(order), mega) for i in sorted(order[s : s + mega], key=lambda i: q_len[i])]
        batches = [order[s : s + b] for s in range(0, len(order), b)]
        if self.config.length_grouped:
            rng.shuffle(batches)
        return batches

    def sample_groups(self, rows: Sequence[int], step: int) -> tuple[list[int], list[float] | None]:
        """Passage indices (``group_size`` per row, positive first) and their teacher scores."""
        rng = random.Random(f"{self.config.seed}-group-{step}")
        passages: list[int] = []
        scores: list[float] | None = [] if self.teacher else None
        g = self.config.group_size
        for r in rows:
            row = self.rows[r]
            p = rng.randrange(len(row.pos))
            if g > 1:
                if not row.neg:
                    raise ValueError(
                        f"query {self.queries[row.query]!r:.60} has no negatives but group_size is {g}; "
                        "add 'neg' passages or use group_size=1 with in-batch negatives"
                    )
                n = len(row.neg)
                negs = rng.sample(range(n), g - 1) if n >= g - 1 else [rng.randrange(n) for _ in range(g - 1)]
            else:
                negs = []
            passages += [row.pos[p]] + [row.neg[i] for i in negs]
            if scores is not None:
                if row.pos_scores is None or row.neg_scores is None:  # one data file with scores, another without
                    raise ValueError(
                        f"query {self.queries[row.query]!r:.60} has no teacher scores but the first example has; "
                        "give 'pos_scores'/'neg_scores' in every row of every data file or in none"
                    )
                scores += [row.pos_scores[p]] + [row.neg_scores[i] for i in negs]
        return passages, scores

    # ------------------------------------------------------------------------------ one step
    def compute_loss(self, rows: Sequence[int], step: int) -> M3Loss:
        """The loss of one batch (``rows`` index the training examples)."""
        c = self.config
        modes = tuple(m for m in ("dense", "sparse", "colbert") if m in c.modes)
        passages, teacher_scores = self.sample_groups(rows, step)
        q = head_outputs(*self._hidden([self.rows[r].query for r in rows], "query"), self.heads, self.spec, modes)
        p = head_outputs(*self._hidden(passages, "passage"), self.heads, self.spec, modes)
        score_fns = {"dense": dense_scores, "sparse": sparse_scores, "colbert": colbert_scores}
        scores: dict[str, torch.Tensor] = {m: score_fns[m](q, p) for m in modes}  # [B, B*G] each
        b, g = len(rows), c.group_size
        if c.in_batch_negatives:
            targets = torch.arange(b, device=self.device) * g
        else:
            own = torch.arange(b, device=self.device)
            scores = {m: s.view(b, b, g)[own, own] for m, s in scores.items()}  # each query vs its own group
            targets = torch.zeros(b, dtype=torch.long, device=self.device)
        teacher = None
        if teacher_scores is not None:
            t = torch.softmax(torch.tensor(teacher_scores, device=self.device).view(b, g), dim=-1)
            if c.in_batch_negatives:  # no teacher mass on other queries' passages
                full = torch.zeros(b, b, g, device=self.device)
                full[torch.arange(b), torch.arange(b)] = t
                t = full.view(b, b * g)
            teacher = t
        if len(modes) == 3:
            return m3_loss(scores["dense"], scores["sparse"], scores["colbert"], targets,
                           temperature=c.temperature, weights=self.loss_weights, teacher=teacher)  # fmt: skip
        return subset_loss(scores, targets, temperature=c.temperature, teacher=teacher)

    def _seed_step(self, step: int) -> None:
        torch.manual_seed(self.config.seed * 1_000_003 + step)  # dropout of a resumed step matches

    # ----------------------------------------------------------------------------- the run
    def train(self) -> TrainResult:
        c = self.config
        resumed = self._maybe_resume()
        if self.config.heads_only:
            self.backbone.eval()
        else:
            self.backbone.train()
        last: dict[str, float] = {}
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", disable=not c.show_progress)
        save_every = c.save_steps or self.steps_per_epoch
        while self.step < self.total_steps:
            epoch, within = divmod(self.step, self.steps_per_epoch)
            rows = self.epoch_batches(epoch)[within]
            self._seed_step(self.step)
            loss = self.compute_loss(rows, self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            last = loss.as_floats()
            bar.set_postfix(loss=f"{last['total']:.4f}", sparse=f"{last['sparse']:.3f}", epoch=epoch, refresh=False)
            bar.update(1)
            if self.step % save_every == 0 and self.step < self.total_steps:
                self.save_checkpoint()
        bar.close()
        self.save_model(self.out)
        shutil.rmtree(self.out / CHECKPOINT, ignore_errors=True)
        return TrainResult(self.out, self.step, last, resumed)

    # ---------------------------------------------------------------------------- saving
    def save_model(self, out_dir: Path) -> None:
        """The M3 layout: heads + ``m3_config.json`` (+ the backbone when it was trained)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.heads.save(out_dir)
        config: dict = {"pooling": self.pooling, "backbone": None, "backbone_package": None,
                        "weights": list(self.config.mode_weights or self.files.weights)}  # fmt: skip
        if self.config.heads_only:
            # The backbone did not change: point at it instead of copying it.
            package = _backbone_package(self.config, self.files)
            if package:
                config["backbone_package"] = package
            elif self.files.backbone_dir.resolve() != out_dir.resolve():
                config["backbone"] = str(self.files.backbone_dir.resolve())
        else:
            self.backbone.save_pretrained(out_dir, safe_serialization=True)
            self.tokenizer.save_pretrained(out_dir)
        (out_dir / M3_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def save_checkpoint(self) -> None:
        ck = self.out / CHECKPOINT
        tmp = self.out / (CHECKPOINT + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(self.heads.state_dict(), tmp / "heads.pt")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
        if not self.config.heads_only:
            self.backbone.save_pretrained(tmp / "backbone", safe_serialization=True)
        state = {"step": self.step, "config": self.config.to_dict()}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        shutil.rmtree(ck, ignore_errors=True)
        tmp.replace(ck)  # the previous checkpoint is only replaced by a complete one

    def _maybe_resume(self) -> int:
        ck = self.out / CHECKPOINT
        if not (self.config.resume and (ck / "trainer_state.json").exists()):
            return 0
        state = json.loads((ck / "trainer_state.json").read_text(encoding="utf-8"))
        saved, now = dict(state["config"]), self.config.to_dict()
        for volatile in ("resume", "show_progress", "device", "state_cache_dir"):
            saved.pop(volatile, None)
            now.pop(volatile, None)
        if saved != now:
            diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise ValueError(
                f"{ck} was written by a run with other options ({', '.join(diff)} differ). "
                f"Fix: rerun with the same options, pass resume=False (--no-resume), or delete {ck}."
            )
        self.heads.load_state_dict(torch.load(ck / "heads.pt", map_location=self.device, weights_only=True))
        self.optimizer.load_state_dict(torch.load(ck / "optimizer.pt", map_location=self.device, weights_only=True))
        self.scheduler.load_state_dict(torch.load(ck / "scheduler.pt", map_location="cpu", weights_only=True))
        if not self.config.heads_only:
            from safetensors.torch import load_file

            self.backbone.load_state_dict(load_file(str(ck / "backbone" / "model.safetensors")), strict=False)
        self.step = int(state["step"])
        return self.step


def _index(examples: Sequence[TrainExample]) -> tuple[list[str], list[str], list[_Row]]:
    """Unique query and passage texts (each encoded once per step batch) and rows pointing at them."""
    q_ids: dict[str, int] = {}
    p_ids: dict[str, int] = {}
    rows: list[_Row] = []
    for ex in examples:
        qi = q_ids.setdefault(ex.query, len(q_ids))
        pos = tuple(p_ids.setdefault(t, len(p_ids)) for t in ex.pos)
        neg = tuple(p_ids.setdefault(t, len(p_ids)) for t in ex.neg)
        rows.append(_Row(qi, pos, neg, ex.pos_scores, ex.neg_scores))
    return list(q_ids), list(p_ids), rows


def _resolve(config: TrainConfig) -> ModelFiles:
    if config.backbone_package:
        if config.model:
            raise ValueError(
                f"both model={config.model!r} and backbone_package={config.backbone_package!r} given; "
                "expected one: a model to fine-tune, or a backbone package to put fresh heads on"
            )
        if not config.new_heads:
            raise ValueError("a backbone package has no M3 heads; pass new_heads=True (--new-heads)")
        backbone = _package_model_dir(config.backbone_package, config.backbone_package)
        return ModelFiles(name=config.backbone_package, backbone_dir=backbone, heads_dir=backbone, pooling="cls")
    if not config.model:
        raise ValueError("no model given; expected model= (a dir, hub id or short name) or backbone_package=")
    return resolve_model(config.model)


def _backbone_package(config: TrainConfig, files: ModelFiles) -> str | None:
    """The package the backbone came from: given directly, or recorded by the model being tuned."""
    if config.backbone_package:
        return config.backbone_package
    config_file = files.heads_dir / M3_CONFIG
    if config_file.exists():
        return json.loads(config_file.read_text(encoding="utf-8")).get("backbone_package") or None
    return None


def train(config: TrainConfig) -> TrainResult:
    """Run a fine-tuning job to the end (resuming from ``output_dir/checkpoint`` if present)."""
    return Trainer(config).train()
