"""The public names are a promise: changing them must be a deliberate edit here."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

EXPECTED = {
    "m3_rag": ["EncoderConfig", "EncoderStats", "M3Encoder", "M3Output", "ModelNotFoundError", "PairScores", "SparseVector"],
    "m3_rag.scoring": ["dense_scores", "lexical_scores", "lexical_score", "maxsim_scores", "maxsim_score", "combine_scores",
                       "pool_colbert", "pooled_rows"],
    "m3_rag.types": ["OutputName", "ALL_OUTPUTS", "SparseVector", "M3Output", "validate_outputs",
                     "Encoder", "AsyncEncoder", "check_encoder", "async_encoder"],
    "m3_rag.cache": ["CachedEncoder"],
}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_all_is_pinned(module):
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(EXPECTED[module])
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_core_imports_no_framework():
    code = (
        "import sys, m3_rag, m3_rag.encoder, m3_rag.scoring, m3_rag.cache, m3_rag.store\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'langchain', 'llama_index', 'langchain_qdrant')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
