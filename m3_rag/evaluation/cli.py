"""``m3-rag eval``: one table of nDCG@10 / Recall@100 per mode for a model on a BEIR folder.

``--pool-factor`` and ``--colbert-datatype`` set how the pipeline's index stores ColBERT; each
takes one value or several (``--pool-factor 1,2,3``, ``--pool-factor 1 --pool-factor 2``, or,
through :class:`EvalCommand`, ``--pool-factor 1 2 3``), and the pipeline then runs once per
combination on the same encodings, its modes named ``m3@f2-turbo8``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

__all__ = ["app", "eval_command", "main", "EvalCommand", "expand_variadic_options"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evaluate retrieval per mode.")

# Datatypes spelled here so that parsing the command line imports no store code.
_DATATYPES = ("float16", "float32", "turbo8", "turbo4")
_DENSE_QUANTIZATIONS = ("int8", "none")
_INTS = re.compile(r"\d+(,\d+)*")


def _is_datatypes(token: str) -> bool:
    return all(part in _DATATYPES for part in token.split(","))


#: Options whose values may follow one another after one flag (``--pool-factor 1 2 3``): a
#: following token is one more value while it looks like one (an int / a datatype name).
VARIADIC_OPTIONS = {"--pool-factor": lambda t: bool(_INTS.fullmatch(t)), "--colbert-datatype": _is_datatypes}


def expand_variadic_options(args: list[str]) -> list[str]:
    """``--pool-factor 1 2 3`` -> ``--pool-factor 1 --pool-factor 2 --pool-factor 3`` (click options
    take one value per flag); everything else, and all after ``--``, unchanged."""
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            out += args[i:]
            break
        out.append(token)
        i += 1
        looks_like = VARIADIC_OPTIONS.get(token)
        if looks_like is None:
            continue
        if i < len(args):  # the flag's own value, whatever it is (click validates it)
            out.append(args[i])
            i += 1
        while i < len(args) and looks_like(args[i]):
            out += [token, args[i]]
            i += 1
    return out


class EvalCommand(TyperCommand):
    """The ``eval`` command, reading ``--pool-factor 1 2 3`` / ``--colbert-datatype float16 turbo8`` as lists.

    Register it with ``app.command("eval", cls=EvalCommand)(eval_command)``; without it the
    lists are written ``--pool-factor 1,2,3`` or ``--pool-factor 1 --pool-factor 2``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_variadic_options(list(args)))


@app.callback()
def _group() -> None:
    """Keeps ``eval`` a named sub-command even though it is the only one."""


@app.command("eval", cls=EvalCommand)
def eval_command(
    folder: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")],
    model: Annotated[str, typer.Option(help="model dir, hub id or 'm3-mini'")] = "m3-mini",
    split: Annotated[str, typer.Option(help="qrels split to evaluate")] = "test",
    max_queries: Annotated[int | None, typer.Option(help="seeded sample of queries (smoke runs)")] = None,
    max_docs: Annotated[int | None, typer.Option(help="docs kept: all relevant + seeded distractors")] = None,
    seed: int = 0,
    weights: Annotated[str | None, typer.Option(help="dense,sparse,colbert (default: the model's)")] = None,
    pipeline: Annotated[bool, typer.Option(help="also run the Qdrant Edge store modes")] = True,
    exhaustive: Annotated[bool, typer.Option(help="score the exhaustive modes (--no-exhaustive: the pipeline only, "
                                             "e.g. a grid of storage settings)")] = True,
    index_path: Annotated[Path | None, typer.Option(help="keep the Edge index here (default: temp dir)")] = None,
    prefetch_k: Annotated[int | None, typer.Option(help="store prefetch size per mode")] = None,
    pool_factor: Annotated[list[str] | None, typer.Option(
        "--pool-factor", metavar="INT[,INT...]",
        help="ColBERT pool factor of the pipeline's index (1: every token vector; default: the store's); "
             "several values (1,2,3 or repeated) run the pipeline once per value")] = None,
    colbert_datatype: Annotated[list[str] | None, typer.Option(
        "--colbert-datatype", metavar="DTYPE[,DTYPE...]",
        help="ColBERT storage datatype of the pipeline's index: float16, float32, turbo8 or turbo4 (default: the store's); several values "
             "(float16,turbo8 or repeated) run the pipeline once per value, times each --pool-factor")] = None,
    dense_quantization: Annotated[list[str] | None, typer.Option(
        "--dense-quantization", metavar="Q[,Q...]",
        help="dense index of the pipeline's index: int8 or none (default: the store's); several values run the "
             "pipeline once per value, times the ColBERT options")] = None,
    query_max_length: Annotated[int | None, typer.Option(help="query max tokens (default: the encoder's)")] = None,
    doc_max_length: Annotated[int | None, typer.Option(help="document max tokens (default: the encoder's)")] = None,
    state_cache: Annotated[Path | None, typer.Option(help="apply the heads to backbone states cached here "
                                                        "(fast re-evaluation of heads on a frozen backbone)")] = None,
    select_weights: Annotated[bool, typer.Option(help="pick mode weights on this split (use a TRAINING split)")] = False,
    write_weights: Annotated[bool, typer.Option(help="with --select-weights: store them in MODEL/m3_config.json")] = False,
    weight_step: Annotated[float, typer.Option(help="with --select-weights: grid step over the simplex")] = 0.1,
    min_weight: Annotated[float, typer.Option(help="with --select-weights: smallest weight of any mode (0 allows "
                                              "single-mode and pair corners)")] = 0.1,
    device: str | None = None,
    # Spelled as m3_rag.cli.resources.BackendOpt / PrecisionOpt: importing those here would be circular (m3_rag.cli imports this module).
    backend: Annotated[str, typer.Option(help="torch, or onnx (ONNX Runtime on the CPU; needs the onnx extra)")] = "torch",
    precision: Annotated[str, typer.Option(help="fp32, or int8 (--backend onnx only: quantised backbone)")] = "fp32",
    output: Annotated[Path | None, typer.Option("--json", help="also write the report as JSON here")] = None,
    progress: bool = True,
) -> None:
    """Exhaustive dense/sparse/colbert/dense+sparse/all and store hybrid+rerank/m3, in one table."""
    from m3_rag.cli.errors import CliError
    from m3_rag.cli.resources import check_backend_options, onnx_extra_errors
    from m3_rag.evaluation.beir import load_beir
    from m3_rag.evaluation.evaluate import evaluate
    from m3_rag.train.states_encoder import check_state_cache_backend, open_encoder

    try:  # before the data loads, in the command line's spelling
        runs_on = check_backend_options(backend, precision)
    except CliError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        check_state_cache_backend(state_cache, *runs_on)
    except ValueError as exc:
        raise typer.BadParameter(f"--state-cache holds torch states, found --backend {backend} --precision {precision}; "
                                 "expected torch fp32. Fix: drop --state-cache, or --backend/--precision") from exc  # fmt: skip
    w = None
    if weights is not None:
        parts = [p for p in weights.replace(" ", "").split(",") if p]
        if len(parts) != 3:
            raise typer.BadParameter(f"found {weights!r}; expected three comma-separated numbers: dense,sparse,colbert")
        w = tuple(float(p) for p in parts)
    if not (exhaustive or pipeline):
        raise typer.BadParameter("--no-exhaustive with --no-pipeline scores nothing; expected at least one")
    if select_weights and not exhaustive:
        raise typer.BadParameter("--select-weights chooses on the exhaustive scores; drop --no-exhaustive")
    if write_weights and not select_weights:
        raise typer.BadParameter("--write-weights needs --select-weights")
    if select_weights and w is not None:
        raise typer.BadParameter("--weights and --select-weights both given; expected one")
    factors = _pool_factors(pool_factor)
    datatypes = _choices("--colbert-datatype", colbert_datatype, _DATATYPES)
    denses = _choices("--dense-quantization", dense_quantization, _DENSE_QUANTIZATIONS)
    if not pipeline and (factors or datatypes or denses):
        raise typer.BadParameter("--pool-factor/--colbert-datatype/--dense-quantization set the pipeline's index; "
                                 "--no-pipeline runs none")  # fmt: skip
    data = load_beir(folder, split, max_queries=max_queries, max_docs=max_docs, seed=seed)
    given = {"query_max_length": query_max_length, "document_max_length": doc_max_length}
    lengths = {name: value for name, value in given.items() if value is not None}
    with onnx_extra_errors(backend):
        encoder = open_encoder(model, state_cache=state_cache, device=device, show_progress=progress,
                               backend=runs_on[0], precision=runs_on[1], **lengths)  # fmt: skip
    # One encode of the corpus (and one MaxSim pass) serves the weight selection and the table.
    report = evaluate(encoder, data, model_name=model, weights=w, select_weights=select_weights,
                      weight_step=weight_step, min_weight=min_weight, pipeline=pipeline, index_path=index_path,
                      prefetch_k=prefetch_k, colbert_pool_factor=factors, colbert_datatype=datatypes,
                      dense_quantization=denses, exhaustive=exhaustive, show_progress=progress)  # fmt: skip
    if report.weight_choice is not None:
        choice = report.weight_choice
        typer.echo(f"selected weights (dense, sparse, colbert) = {choice.weights} on {data.name} "
                   f"(grid step {weight_step}, every weight >= {min_weight}): nDCG@10 {choice.ndcg10:.4f}")  # fmt: skip
        if write_weights:
            _write_weights(model, choice.weights)
    typer.echo(report.to_table())
    if output is not None:
        output.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")


def _values(given: list[str] | None) -> list[str]:
    return [part.strip() for value in given or [] for part in value.split(",") if part.strip()]


def _pool_factors(given: list[str] | None) -> list[int]:
    values = _values(given)
    bad = [v for v in values if not v.isdigit() or int(v) < 1]
    if bad:
        raise typer.BadParameter(f"--pool-factor {', '.join(bad)}; expected ints >= 1 (1: no pooling), e.g. --pool-factor 1,2,3")
    return [int(v) for v in values]


def _choices(flag: str, given: list[str] | None, allowed: tuple[str, ...]) -> list[str]:
    values = _values(given)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise typer.BadParameter(f"{flag} {', '.join(bad)}; expected some of {', '.join(allowed)}")
    return values


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
