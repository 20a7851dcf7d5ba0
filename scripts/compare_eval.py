"""Is run B better than run A on the same queries? A paired bootstrap of their nDCG@10 difference.

    python scripts/compare_eval.py A.json B.json [--mode all] [--mode-b MODE] [--resamples 10000] [--seed 0]
    python scripts/compare_eval.py grid.json grid.json --mode m3@f1-float16 --mode-b m3@f2-turbo8

A.json and B.json are ``m3-rag eval ... --json`` reports of the same split (they carry each
query's nDCG@10). Prints the mean nDCG@10 of each, the mean difference B - A, its bootstrap
standard error and 95% interval (``scipy.stats.bootstrap`` over the queries, BCa). An interval
that holds 0 means the two are not told apart on these queries.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _per_query(path: Path, mode: str) -> dict[str, float]:
    report = json.loads(path.read_text(encoding="utf-8"))
    table = report.get("per_query_ndcg@10")
    if table is None:
        sys.exit(f"{path}: no per-query scores (found keys {sorted(report)}); expected an m3-rag eval --json "
                 "report from this version. Fix: re-run m3-rag eval with --json.")  # fmt: skip
    if mode not in table:
        sys.exit(f"{path}: mode {mode!r} not in the report (found {sorted(table)}). Fix: pass --mode with one of them.")
    return table[mode]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="baseline report (m3-rag eval --json)")
    parser.add_argument("b", type=Path, help="candidate report, same split")
    parser.add_argument("--mode", default="all")
    parser.add_argument("--mode-b", default=None, help="B's mode, if not --mode (e.g. two grid points of one report)")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from scipy.stats import bootstrap

    mode_b = args.mode_b or args.mode
    a, b = _per_query(args.a, args.mode), _per_query(args.b, mode_b)
    if set(a) != set(b):
        sys.exit(f"the reports hold different queries ({len(a)} in {args.a}, {len(b)} in {args.b}, "
                 f"{len(set(a) & set(b))} shared); expected the same split. Fix: evaluate both on one split.")  # fmt: skip
    ids = sorted(a)
    score_a, score_b = np.array([a[q] for q in ids]), np.array([b[q] for q in ids])
    diff = score_b - score_a
    if np.ptp(diff) == 0:  # every resample has the same mean (BCa is undefined there)
        se, lo, hi = 0.0, diff[0], diff[0]
    else:
        result = bootstrap((diff,), np.mean, n_resamples=args.resamples, confidence_level=0.95,
                           method="BCa", random_state=np.random.default_rng(args.seed))  # fmt: skip
        se, (lo, hi) = result.standard_error, result.confidence_interval
    name = args.mode if mode_b == args.mode else f"A {args.mode} / B {mode_b}"
    print(f"{name} nDCG@10 over {len(ids)} queries: A {score_a.mean():.4f}  "
          f"B {score_b.mean():.4f}  B-A {diff.mean():+.4f}  "
          f"se {se:.4f}  95% [{lo:+.4f}, {hi:+.4f}]")  # fmt: skip


if __name__ == "__main__":
    main()
