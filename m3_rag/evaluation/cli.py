"""``m3-rag eval``: one table of nDCG@10 / Recall@100 per mode for a model on a BEIR folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["app", "eval_command", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evaluate retrieval per mode.")


@app.callback()
def _group() -> None:
    """Keeps ``eval`` a named sub-command even though it is the only one."""


@app.command("eval")
def eval_command(
    folder: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")],
    model: Annotated[str, typer.Option(help="model dir, hub id or 'm3-mini'")] = "m3-mini",
    split: Annotated[str, typer.Option(help="qrels split to evaluate")] = "test",
    max_queries: Annotated[Optional[int], typer.Option(help="seeded sample of queries (smoke runs)")] = None,
    max_docs: Annotated[Optional[int], typer.Option(help="docs kept: all relevant + seeded distractors")] = None,
    seed: int = 0,
    weights: Annotated[Optional[str], typer.Option(help="dense,sparse,colbert (default: the model's)")] = None,
    pipeline: Annotated[bool, typer.Option(help="also run the Qdrant Edge store modes")] = True,
    index_path: Annotated[Optional[Path], typer.Option(help="keep the Edge index here (default: temp dir)")] = None,
    prefetch_k: Annotated[Optional[int], typer.Option(help="store prefetch size per mode")] = None,
    query_max_length: Annotated[Optional[int], typer.Option(help="query max tokens (default: the encoder's)")] = None,
    doc_max_length: Annotated[Optional[int], typer.Option(help="document max tokens (default: the encoder's)")] = None,
    state_cache: Annotated[Optional[Path], typer.Option(help="apply the heads to backbone states cached here "
                                                        "(fast re-evaluation of heads on a frozen backbone)")] = None,
    select_weights: Annotated[bool, typer.Option(help="pick mode weights on this split (use a TRAINING split)")] = False,
    write_weights: Annotated[bool, typer.Option(help="with --select-weights: store them in MODEL/m3_config.json")] = False,
    weight_step: Annotated[float, typer.Option(help="with --select-weights: grid step over the simplex")] = 0.1,
    min_weight: Annotated[float, typer.Option(help="with --select-weights: smallest weight of any mode (0 allows "
                                              "single-mode and pair corners)")] = 0.1,
    device: Optional[str] = None,
    output: Annotated[Optional[Path], typer.Option("--json", help="also write the report as JSON here")] = None,
    progress: bool = True,
) -> None:
    """Exhaustive dense/sparse/colbert/dense+sparse/all and store hybrid+rerank/m3, in one table."""
    from m3_rag.evaluation.beir import load_beir
    from m3_rag.evaluation.evaluate import evaluate
    from m3_rag.train.states_encoder import open_encoder

    w = None
    if weights is not None:
        parts = [p for p in weights.replace(" ", "").split(",") if p]
        if len(parts) != 3:
            raise typer.BadParameter(f"found {weights!r}; expected three comma-separated numbers: dense,sparse,colbert")
        w = tuple(float(p) for p in parts)
    if write_weights and not select_weights:
        raise typer.BadParameter("--write-weights needs --select-weights")
    if select_weights and w is not None:
        raise typer.BadParameter("--weights and --select-weights both given; expected one")
    data = load_beir(folder, split, max_queries=max_queries, max_docs=max_docs, seed=seed)
    given = {"query_max_length": query_max_length, "document_max_length": doc_max_length}
    lengths = {name: value for name, value in given.items() if value is not None}
    encoder = open_encoder(model, state_cache=state_cache, device=device, show_progress=progress, **lengths)
    # One encode of the corpus (and one MaxSim pass) serves the weight selection and the table.
    report = evaluate(encoder, data, model_name=model, weights=w, select_weights=select_weights,
                      weight_step=weight_step, min_weight=min_weight, pipeline=pipeline, index_path=index_path,
                      prefetch_k=prefetch_k, show_progress=progress)  # fmt: skip
    if report.weight_choice is not None:
        choice = report.weight_choice
        typer.echo(f"selected weights (dense, sparse, colbert) = {choice.weights} on {data.name} "
                   f"(grid step {weight_step}, every weight >= {min_weight}): nDCG@10 {choice.ndcg10:.4f}")  # fmt: skip
        if write_weights:
            _write_weights(model, choice.weights)
    typer.echo(report.to_table())
    if output is not None:
        output.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")


def _write_weights(model: str, weights: tuple[float, float, float]) -> None:
    from m3_rag.loading import M3_CONFIG, resolve_model

    config_file = resolve_model(model).heads_dir / M3_CONFIG
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
    config["weights"] = list(weights)
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"wrote the weights to {config_file}")


def main(argv: list[str] | None = None) -> None:
    app(args=argv, standalone_mode=True)


if __name__ == "__main__":
    main()
