"""Retrieval quality per mode on BEIR-layout data (nDCG@10, Recall@100 via ``ranx``)."""

from m3_rag.evaluation.beir import BeirData, doc_text, load_beir
from m3_rag.evaluation.evaluate import evaluate
from m3_rag.evaluation.report import EvalReport, ModeScore, score_runs
from m3_rag.evaluation.runs import EXHAUSTIVE_MODES, PIPELINE_MODES, encode_corpus, exhaustive_runs, pipeline_runs

__all__ = [
    "BeirData",
    "doc_text",
    "load_beir",
    "evaluate",
    "EvalReport",
    "ModeScore",
    "score_runs",
    "EXHAUSTIVE_MODES",
    "PIPELINE_MODES",
    "encode_corpus",
    "exhaustive_runs",
    "pipeline_runs",
]
