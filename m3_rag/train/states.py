"""Frozen-backbone hidden states, computed once and cached on disk.

With the encoder frozen (heads-only training) the backbone's last hidden states of every
training text never change, so they are computed once (length-sorted, little padding),
stored as float16 and reused by every later run. Training then costs only the heads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from m3_rag.batching import token_budget_batches

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["StateCache", "StateStore", "compute_states", "text_hash", "backbone_fingerprint"]

_FORMAT = "m3-rag-states-v1"


@dataclass(frozen=True)
class StateCache:
    """Hidden states of ``len(self)`` texts, flat: text ``i`` owns rows ``offsets[i]:offsets[i+1]``."""

    input_ids: torch.Tensor  # [total_tokens] int64
    states: torch.Tensor  # [total_tokens, H] float16
    offsets: torch.Tensor  # [n + 1] int64

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def hidden_size(self) -> int:
        return int(self.states.shape[1])

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def batch(self, rows: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded ``(hidden [B, L, H] float32, input_ids [B, L], attention_mask [B, L])`` for ``rows``."""
        rows_t = torch.as_tensor(list(rows), dtype=torch.long)
        starts, lengths = self.offsets[rows_t], self.lengths()[rows_t]
        width = int(lengths.max())
        mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)  # [B, L]
        # One gather for the whole batch: flat row index of every real token, in batch order.
        index = (starts.unsqueeze(1) + torch.arange(width).unsqueeze(0))[mask]
        hidden = torch.zeros(len(rows_t), width, self.hidden_size)
        hidden[mask] = self.states[index].float()
        ids = torch.full((len(rows_t), width), pad_id, dtype=torch.long)
        ids[mask] = self.input_ids[index]
        return hidden, ids, mask.long()

    def to_float32(self) -> StateCache:
        """The same cache with float32 states (twice the memory, no conversion at every batch)."""
        return StateCache(self.input_ids, self.states.float(), self.offsets)

    def select(self, rows: Sequence[int]) -> StateCache:
        """A new cache holding ``rows`` in the order given."""
        rows = list(rows)
        lengths = self.lengths()[rows] if rows else torch.zeros(0, dtype=torch.long)
        offsets = torch.zeros(len(rows) + 1, dtype=torch.long)
        offsets[1:] = lengths.cumsum(0)
        if not rows:
            return StateCache(self.input_ids[:0], self.states[:0], offsets)
        index = torch.cat([torch.arange(int(self.offsets[r]), int(self.offsets[r + 1])) for r in rows])
        return StateCache(self.input_ids[index], self.states[index], offsets)

    @staticmethod
    def concat(parts: Sequence[StateCache]) -> StateCache:
        if not parts:
            raise ValueError("no state caches to concatenate; expected at least one")
        offsets = [parts[0].offsets]
        for p in parts[1:]:
            offsets.append(p.offsets[1:] + offsets[-1][-1])
        return StateCache(
            torch.cat([p.input_ids for p in parts]), torch.cat([p.states for p in parts]), torch.cat(offsets)
        )


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def backbone_fingerprint(backbone_dir: Path, max_length: int) -> str:
    """Names the cache folder: backbone config, weight file names and sizes, and the max length."""
    h = hashlib.sha256()
    config = Path(backbone_dir) / "config.json"
    h.update(config.read_bytes() if config.exists() else str(backbone_dir).encode())
    for weights in sorted(Path(backbone_dir).glob("*.safetensors")):
        h.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return f"{h.hexdigest()[:16]}-L{max_length}"


class StateStore:
    """Content-addressed hidden states on disk: a text already computed is never run again.

    Each :meth:`get` computes only the missing texts and appends them as a new shard, so an
    interrupted run keeps every shard it finished and later runs reuse them all.
    """

    def __init__(self, root: str | Path, backbone_dir: Path, max_length: int) -> None:
        self.dir = Path(root) / backbone_fingerprint(Path(backbone_dir), max_length)
        self.max_length = max_length
        self._shards: list[tuple[StateCache, list[str]]] = []
        self._loaded = False

    def _load(self) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        for file in sorted(self.dir.glob("shard-*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(
                    f"{file} is not a state shard of format {_FORMAT} (found {meta.get('format')!r}). "
                    f"Fix: delete the folder {self.dir} to rebuild the cache."
                )
            t = load_file(str(file))
            self._shards.append((StateCache(t["input_ids"], t["states"], t["offsets"]), json.loads(meta["hashes"])))
        self._loaded = True

    def get(
        self,
        model: PreTrainedModel,
        tokenizer,
        texts: Sequence[str],
        *,
        show_progress: bool = True,
        token_budget: int = 16384,
        desc: str = "backbone states",
    ) -> StateCache:
        """States of ``texts`` in order, computing (and saving) only those not cached yet."""
        from safetensors.torch import save_file

        if not self._loaded:
            self._load()
        where: dict[str, tuple[int, int]] = {}
        for s, (_, hashes) in enumerate(self._shards):
            for i, h in enumerate(hashes):
                where[h] = (s, i)
        wanted = [text_hash(t) for t in texts]
        missing: dict[str, str] = {}
        for h, t in zip(wanted, texts, strict=True):
            if h not in where and h not in missing:
                missing[h] = t
        if missing:
            new = compute_states(
                model,
                tokenizer,
                list(missing.values()),
                max_length=self.max_length,
                token_budget=token_budget,
                show_progress=show_progress,
                desc=desc,
            )
            hashes = list(missing)
            self.dir.mkdir(parents=True, exist_ok=True)
            # Named by content, not by count: two stores on one folder (the query and document
            # stores at one max length, or two processes) would otherwise overwrite each other.
            file = self.dir / f"shard-{hashlib.sha1(json.dumps(hashes).encode()).hexdigest()[:20]}.safetensors"
            tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp")
            save_file(
                {"input_ids": new.input_ids, "states": new.states, "offsets": new.offsets},
                str(tmp),
                metadata={"format": _FORMAT, "hashes": json.dumps(hashes)},
            )
            tmp.replace(file)  # atomic: an interrupted run never leaves a half-written shard
            self._shards.append((new, hashes))
            for i, h in enumerate(hashes):
                where[h] = (len(self._shards) - 1, i)
        if not wanted:
            return StateCache(
                torch.zeros(0, dtype=torch.long), torch.zeros(0, 1, dtype=torch.float16), torch.zeros(1, dtype=torch.long)
            )
        # Gather in runs of the same shard to keep the copies few.
        parts: list[StateCache] = []
        run_shard = where[wanted[0]][0]
        run_rows: list[int] = []
        for h in wanted:
            s, i = where[h]
            if s != run_shard:
                parts.append(self._shards[run_shard][0].select(run_rows))
                run_shard, run_rows = s, []
            run_rows.append(i)
        parts.append(self._shards[run_shard][0].select(run_rows))
        return StateCache.concat(parts)


@torch.inference_mode()
def compute_states(
    model: PreTrainedModel,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    token_budget: int = 16384,
    show_progress: bool = True,
    desc: str = "backbone states",
) -> StateCache:
    """Run the frozen backbone over ``texts`` once (length-sorted batches), keeping float16 states."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    lengths = [len(x) for x in encoded]
    offsets = torch.zeros(len(texts) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(lengths, dtype=torch.long).cumsum(0)
    total = int(offsets[-1])
    states = torch.zeros(total, int(model.config.hidden_size), dtype=torch.float16)
    input_ids = torch.zeros(total, dtype=torch.long)
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    model.eval()
    with tqdm(total=total, desc=desc, unit="tok", disable=not show_progress) as bar:
        for rows in token_budget_batches(lengths, token_budget):
            width = max(lengths[r] for r in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for b, r in enumerate(rows):
                ids[b, : lengths[r]] = torch.tensor(encoded[r])
                mask[b, : lengths[r]] = 1
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state.float().cpu()
            for b, r in enumerate(rows):
                start = int(offsets[r])
                states[start : start + lengths[r]] = out[b, : lengths[r]].half()
                input_ids[start : start + lengths[r]] = ids[b, : lengths[r]]
            bar.update(sum(lengths[r] for r in rows))
    return StateCache(input_ids=input_ids, states=states, offsets=offsets)
