"""Random checkpoints in BGE-M3's exact on-disk layout, for tests and benchmarks.

Real BGE-M3 weights are 2.3 GB from a model hub. Correctness does not depend on the weight
values (parity with the reference is checked on the same random weights) and throughput
does not either, so tests and benchmarks build a checkpoint here:

    <dir>/config.json, model.safetensors      Hugging Face XLM-RoBERTa backbone
    <dir>/tokenizer.json, tokenizer_config.json  a Unigram tokenizer trained on the given texts
    <dir>/colbert_linear.pt                   {"weight": [D, H], "bias": [D]}
    <dir>/sparse_linear.pt                    {"weight": [1, H], "bias": [1]}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["CheckpointSpec", "TINY", "BGE_M3_SHAPE", "train_tokenizer", "build_random_checkpoint"]


@dataclass(frozen=True)
class CheckpointSpec:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    # Big enough that different inputs give clearly different outputs (HF's default 0.02
    # makes every text's hidden states nearly the same).
    init_std: float = 0.2
    tokenizer_vocab: int = 8000


TINY = CheckpointSpec(layers=2, hidden=32, heads=4, intermediate=64, vocab_size=8000, max_positions=8194)
BGE_M3_SHAPE = CheckpointSpec(
    layers=24, hidden=1024, heads=16, intermediate=4096, vocab_size=250002, max_positions=8194, init_std=0.02
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000):
    """An XLM-RoBERTa-style tokenizer (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3) trained on ``texts``."""
    # XLMRobertaTokenizerFast: transformers 5 resolves *TokenizerFast names lazily (aliases of the
    # tokenizer class), out of the type checker's sight; 4.x, also supported, has the class itself.
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaTokenizerFast  # type: ignore[attr-defined]

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>")
    tok.train_from_iterator(list(texts), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=8192,
    )


def build_random_checkpoint(
    path: str | Path,
    texts: Iterable[str],
    spec: CheckpointSpec = TINY,
    *,
    seed: int = 0,
    colbert_dim: int | None = None,
) -> Path:
    """Write a seeded random BGE-M3-layout checkpoint to ``path`` and return it."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, min(spec.tokenizer_vocab, spec.vocab_size))
    if len(tokenizer) > spec.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model vocabulary is {spec.vocab_size}")
    tokenizer.save_pretrained(path)

    config = XLMRobertaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        intermediate_size=spec.intermediate,
        max_position_embeddings=spec.max_positions,
        initializer_range=spec.init_std,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    generator = torch.Generator().manual_seed(seed)
    model = XLMRobertaModel(config, add_pooling_layer=False)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name:
                continue  # keep LayerNorm at identity, as HF initialises it
            if name.endswith("bias"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * spec.init_std)
    model.save_pretrained(path, safe_serialization=True)

    dim = colbert_dim or spec.hidden
    colbert = {
        "weight": torch.randn(dim, spec.hidden, generator=generator) * (1.0 / spec.hidden**0.5),
        "bias": torch.randn(dim, generator=generator) * 0.01,
    }
    # Zero-mean sparse head: about half the tokens get a positive weight, half are dropped by ReLU.
    sparse = {
        "weight": torch.randn(1, spec.hidden, generator=generator) * (1.0 / spec.hidden**0.5),
        "bias": torch.zeros(1),
    }
    torch.save(colbert, path / "colbert_linear.pt")
    torch.save(sparse, path / "sparse_linear.pt")
    (path / "m3_spec.json").write_text(_spec_json(spec, seed))
    return path


def _spec_json(spec: CheckpointSpec, seed: int) -> str:
    import json

    return json.dumps({"random_checkpoint": asdict(spec), "seed": seed}, indent=2)
