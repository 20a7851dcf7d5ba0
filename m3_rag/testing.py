"""Random checkpoints in BGE-M3's exact on-disk layout, for tests and benchmarks.

Real BGE-M3 weights are 2.3 GB from a model hub. Correctness does not depend on the weight
values (parity with the reference is checked on the same random weights) and throughput
does not either, so tests and benchmarks build a checkpoint here:

    <dir>/config.json, model.safetensors      Hugging Face XLM-RoBERTa backbone
    <dir>/tokenizer.json, tokenizer_config.json  a Unigram tokenizer trained on the given texts
    <dir>/sentencepiece.bpe.model             with ``tokenizer="sentencepiece"`` only: the SentencePiece
                                              unigram model the tokenizer is converted from (XLM-R's layout)
    <dir>/colbert_linear.pt                   {"weight": [D, H], "bias": [D]}
    <dir>/sparse_linear.pt                    {"weight": [1, H], "bias": [1]}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = [
    "CheckpointSpec",
    "TINY",
    "BGE_M3_SHAPE",
    "SENTENCEPIECE_FILE",
    "train_tokenizer",
    "train_sentencepiece_tokenizer",
    "build_random_checkpoint",
]

SENTENCEPIECE_FILE = "sentencepiece.bpe.model"  # XLM-R's (and BGE-M3's) name for it, though the model is unigram


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


def train_sentencepiece_tokenizer(texts: Iterable[str], path: str | Path, vocab_size: int = 8000):
    """XLM-R's tokenizer made the way XLM-R's is: a SentencePiece unigram model (``nmt_nfkc``) trained on
    ``texts`` and written to ``path`` (a file), then converted as transformers converts XLM-R's
    ``sentencepiece.bpe.model``: ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, piece ``i`` -> ``i + 1``,
    ``<mask>`` last (``vocab_size + 1``); Precompiled charsmap normaliser, whitespace split, Metaspace.

    Tools that read the SentencePiece file themselves (bge-m3-lite's tokenizer) then see the same
    vocabulary as the Hugging Face tokenizer returned here. ``vocab_size`` counts the SentencePiece
    pieces (the tokenizer has two more: ``<pad>`` and ``<mask>``); it is a soft limit on small corpora.
    Needs ``sentencepiece`` (and ``protobuf``, to read the charsmap).
    """
    import io

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast  # type: ignore[attr-defined]

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in texts if t.strip()]), model_writer=buffer, model_type="unigram",
        vocab_size=vocab_size, hard_vocab_limit=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="nmt_nfkc", character_coverage=1.0, max_sentence_length=1 << 20,
        input_sentence_size=0, shuffle_input_sentence=False, num_threads=1, minloglevel=2,
    )  # fmt: skip
    path = Path(path)
    path.write_bytes(buffer.getvalue())
    proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
    proto.ParseFromString(buffer.getvalue())
    # transformers' XLMRobertaConverter: the fairseq specials first, SentencePiece's <unk> <s> </s> dropped.
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece.piece, piece.score) for piece in proto.pieces[3:]] + [("<mask>", 0.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
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
    tokenizer: str = "unigram",
) -> Path:
    """Write a seeded random BGE-M3-layout checkpoint to ``path`` and return it.

    ``tokenizer="unigram"`` trains the Hugging Face tokenizer directly (:func:`train_tokenizer`);
    ``"sentencepiece"`` trains a SentencePiece model, keeps it as ``sentencepiece.bpe.model`` and
    converts it (:func:`train_sentencepiece_tokenizer`), as BGE-M3 ships both. m3_spec.json records which.
    """
    from transformers import XLMRobertaConfig, XLMRobertaModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer == "unigram":
        hf_tokenizer = train_tokenizer(texts, min(spec.tokenizer_vocab, spec.vocab_size))
    elif tokenizer == "sentencepiece":
        # Two more ids than pieces (<pad>, <mask>): keep the whole tokenizer within the model's vocabulary.
        pieces = min(spec.tokenizer_vocab, spec.vocab_size - 2)
        hf_tokenizer = train_sentencepiece_tokenizer(texts, path / SENTENCEPIECE_FILE, pieces)
    else:
        raise ValueError(f"tokenizer must be 'unigram' or 'sentencepiece', not {tokenizer!r}")
    if len(hf_tokenizer) > spec.vocab_size:
        raise ValueError(f"tokenizer has {len(hf_tokenizer)} tokens but the model vocabulary is {spec.vocab_size}")
    hf_tokenizer.save_pretrained(path)

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
    (path / "m3_spec.json").write_text(_spec_json(spec, seed, tokenizer))
    return path


def _spec_json(spec: CheckpointSpec, seed: int, tokenizer: str = "unigram") -> str:
    import json

    record: dict = {"random_checkpoint": asdict(spec), "seed": seed}
    if tokenizer != "unigram":  # the default leaves the file as it always was
        record["tokenizer"] = tokenizer
    return json.dumps(record, indent=2)
