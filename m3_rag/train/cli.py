"""Command line of the trainer: ``m3-rag train`` (fine-tune), ``m3-rag train-pairs`` (build pairs) and
``m3-rag train-mine`` (add model-mined hard negatives).

``main(argv)`` runs them as one Typer app (``python -m m3_rag.train.cli train ...``); the
``train_command``/``pairs_command``/``mine_command`` functions can be mounted on another Typer app as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app", "train_command", "pairs_command", "mine_command", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fine-tune M3-layout models.")


def _weights(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if len(parts) != 3:
        raise typer.BadParameter(f"found {text!r}; expected three comma-separated numbers: dense,sparse,colbert")
    return (float(parts[0]), float(parts[1]), float(parts[2]))


@app.command("train")
def train_command(
    data: Annotated[list[Path], typer.Argument(help="jsonl files of {query, pos, neg} rows")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="where the M3-layout model is written")],
    model: Annotated[str, typer.Option(help="M3 dir, hub id, 'm3-mini', or HF encoder dir (with --new-heads)")] = "",
    backbone_package: Annotated[str | None, typer.Option(help="Python package shipping the backbone")] = None,
    new_heads: Annotated[bool, typer.Option(help="start fresh ColBERT/sparse heads")] = False,
    pooling: Annotated[str | None, typer.Option(help="dense pooling: cls or mean (default: the model's)")] = None,
    colbert_init: Annotated[str, typer.Option(help="fresh ColBERT head: identity or random")] = "identity",
    sparse_init_bias: Annotated[float, typer.Option(help="fresh sparse head bias (weight starts at 0)")] = 0.1,
    heads_only: Annotated[bool, typer.Option(help="freeze the encoder; cache its states")] = False,
    modes: Annotated[str, typer.Option(help="modes trained: all three = unified loss; a subset = their InfoNCE")] = "dense,sparse,colbert",
    epochs: int = 1,
    batch_size: Annotated[int, typer.Option(help="queries per step")] = 16,
    group_size: Annotated[int, typer.Option(help="1 positive + negatives per query")] = 8,
    in_batch_negatives: bool = True,
    temperature: float = 0.02,
    lr: Annotated[float, typer.Option(help="encoder learning rate")] = 1e-5,
    head_lr: Annotated[float, typer.Option(help="ColBERT head learning rate")] = 1e-4,
    sparse_lr: Annotated[float | None, typer.Option(help="sparse head learning rate (default: head-lr)")] = None,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.0,
    sparse_loss_weight: float = 0.1,
    ensemble_sparse_weight: float = 0.3,
    query_max_length: int = 512,
    passage_max_length: int = 512,
    length_grouped: bool = True,
    gradient_checkpointing: bool = False,
    seed: int = 0,
    save_steps: Annotated[int, typer.Option(help="checkpoint every N steps (0: each epoch)")] = 0,
    resume: Annotated[bool, typer.Option(help="continue from OUTPUT_DIR/checkpoint if present")] = True,
    state_cache_dir: Annotated[Path | None, typer.Option(help="heads-only: backbone state cache")] = None,
    mode_weights: Annotated[str | None, typer.Option(help="shipped weights dense,sparse,colbert")] = None,
    device: str | None = None,
    progress: bool = True,
) -> None:
    """Fine-tune with BGE-M3's unified loss and save the model in the M3 layout."""
    from m3_rag.train.config import TrainConfig
    from m3_rag.train.trainer import train

    config = TrainConfig(
        data=tuple(str(p) for p in data),
        output_dir=str(output_dir),
        model=model,
        backbone_package=backbone_package,
        new_heads=new_heads,
        pooling=pooling,
        colbert_init=colbert_init,
        sparse_init_bias=sparse_init_bias,
        heads_only=heads_only,
        modes=tuple(m for m in modes.replace(" ", "").split(",") if m),
        epochs=epochs,
        batch_size=batch_size,
        group_size=group_size,
        in_batch_negatives=in_batch_negatives,
        temperature=temperature,
        lr=lr,
        head_lr=head_lr,
        sparse_lr=sparse_lr,
        warmup_ratio=warmup_ratio,
        weight_decay=weight_decay,
        sparse_loss_weight=sparse_loss_weight,
        ensemble_sparse_weight=ensemble_sparse_weight,
        query_max_length=query_max_length,
        passage_max_length=passage_max_length,
        length_grouped=length_grouped,
        gradient_checkpointing=gradient_checkpointing,
        seed=seed,
        save_steps=save_steps,
        resume=resume,
        state_cache_dir=str(state_cache_dir) if state_cache_dir else None,
        mode_weights=_weights(mode_weights),
        device=device,
        show_progress=progress,
    )
    result = train(config)
    note = f" (resumed at step {result.resumed_from_step})" if result.resumed_from_step else ""
    typer.echo(f"saved {result.output_dir} after {result.steps} steps{note}; last loss {result.last_loss['total']:.4f}")


@app.command("pairs")
def pairs_command(
    corpus: Annotated[Path, typer.Argument(help="BEIR corpus.jsonl (_id, title, text)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="jsonl file to write")],
    tokenizer: Annotated[str, typer.Option(help="tokenizer dir, model name, or 'm3-mini'")] = "m3-mini",
    negatives: int = 7,
    seed: int = 0,
    limit: int | None = None,
) -> None:
    """Build self-supervised title -> text pairs with lexical hard negatives."""
    from transformers import AutoTokenizer

    from m3_rag.loading import resolve_model
    from m3_rag.train.pairs import title_pairs, write_jsonl

    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer).backbone_dir)
    tok.model_max_length = 1_000_000  # only counting tokens here, nothing is run through the model
    rows = title_pairs(corpus, tok, negatives=negatives, seed=seed, limit=limit)
    write_jsonl(rows, output)
    typer.echo(f"wrote {len(rows)} rows to {output}")


@app.command("mine")
def mine_command(
    data: Annotated[Path, typer.Argument(help="jsonl file of {query, pos, neg} rows")],
    corpus: Annotated[Path, typer.Option(help="BEIR corpus.jsonl (_id, title, text) to mine from")],
    output: Annotated[Path, typer.Option("--output", "-o", help="jsonl file to write")],
    model: Annotated[str, typer.Option(help="model that ranks the corpus: M3 dir, hub id or 'm3-mini'")] = "m3-mini",
    negatives: Annotated[int, typer.Option(help="mined negatives added per row")] = 7,
    skip: Annotated[int, typer.Option(help="best-ranked documents passed over (likely unjudged positives)")] = 10,
    pool: Annotated[int, typer.Option(help="ranks after --skip the negatives are sampled from")] = 50,
    exclude_qrels: Annotated[list[Path] | None, typer.Option(help="qrels tsv whose relevant documents are "
                                                                "never mined (e.g. held-out queries')")] = None,
    weights: Annotated[str | None, typer.Option(help="ranking weights dense,sparse,colbert (default: the model's)")] = None,
    state_cache: Annotated[Path | None, typer.Option(help="apply the heads to backbone states cached here")] = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> None:
    """Add hard negatives mined by a model (ranks SKIP..SKIP+POOL of its `all` score) to training rows."""
    from m3_rag.evaluation.beir import read_corpus, read_relevant_ids
    from m3_rag.train.data import load_rows
    from m3_rag.train.mining import mine_negatives
    from m3_rag.train.pairs import write_jsonl
    from m3_rag.train.states_encoder import open_encoder

    rows = [row for _, row in load_rows(data)]
    doc_ids, doc_texts = read_corpus(corpus)
    excluded = {d for path in exclude_qrels or [] for d in read_relevant_ids(path)}
    encoder = open_encoder(model, state_cache=state_cache, device=device, show_progress=progress)
    mined = mine_negatives(encoder, rows, doc_ids, doc_texts, weights=_weights(weights), negatives=negatives,
                           skip=skip, pool=pool, exclude_ids=excluded, seed=seed, show_progress=progress)  # fmt: skip
    write_jsonl(mined, output)
    typer.echo(f"wrote {len(mined)} rows with {negatives} mined negatives each (at most) to {output}")


def main(argv: list[str] | None = None) -> None:
    app(args=argv, standalone_mode=True)


if __name__ == "__main__":
    main()
