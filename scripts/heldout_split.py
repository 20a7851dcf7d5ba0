"""Split SciFact train into rows to fit the heads on and held-out queries to choose mode weights on.

    python scripts/heldout_split.py DATA_DIR OUT_DIR [--n-heldout 160] [--seed 0] [--disjoint-docs]
        [--extra-rows PAIRS.jsonl]

Writes OUT_DIR/fit.jsonl (the training rows whose query is not held out) and OUT_DIR/beir/, a
BEIR folder (corpus and queries linked from DATA_DIR/scifact) whose qrels/heldout.tsv keeps the
train judgements of the held-out queries only. Heads trained on fit.jsonl never saw those
queries, so weights chosen on them are not biased toward the mode that memorised training
queries best (the sparse head fits its training queries far better than new ones).

--disjoint-docs also drops every training row that shows a held-out query's relevant document
(as a positive or a negative), so the held-out score measures new queries on documents the heads
never saw: the case of a user's own corpus. Without it, a head that memorises training documents
scores well on held-out queries that share them (as on SciFact test, where 216 of 339 relevant
documents are train positives).

--extra-rows appends rows from another jsonl (e.g. self-supervised title -> abstract pairs from
`m3-rag train-pairs`), minus every row that shows a held-out relevant document, so
extra training data cannot carry the held-out documents into the fit rows either.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from m3_rag.train.data import DataError, load_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="shared data dir: train/scifact_train.jsonl and scifact/")
    ap.add_argument("out", type=Path)
    ap.add_argument("--n-heldout", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--disjoint-docs", action="store_true", help="drop rows that show a held-out relevant document")
    ap.add_argument("--extra-rows", type=Path, help="jsonl rows to add to the fit rows (those showing no held-out relevant document)")
    args = ap.parse_args()

    rows = [json.loads(line) for line in (args.data / "train" / "scifact_train.jsonl").open(encoding="utf-8")]
    order = list(range(len(rows)))
    random.Random(args.seed).shuffle(order)
    held_texts = {rows[i]["query"] for i in order[: args.n_heldout]}
    fit = [r for r in rows if r["query"] not in held_texts]
    held_docs = {d for r in rows if r["query"] in held_texts for d in r["pos_ids"]}

    def shows_no_held_doc(row: dict) -> bool:
        return held_docs.isdisjoint(row["pos_ids"]) and held_docs.isdisjoint(row["neg_ids"])

    if args.disjoint_docs:
        fit = [r for r in fit if shows_no_held_doc(r)]
    n_extra = 0
    if args.extra_rows is not None:
        extra = []
        try:
            for where, row in load_rows(args.extra_rows):  # the trainer's own format check
                if "pos_ids" not in row or "neg_ids" not in row:
                    raise DataError(
                        f"{where}: row has no 'pos_ids'/'neg_ids', so its documents cannot be checked against the "
                        "held-out ones. Fix: build it with `m3-rag train-pairs`, which writes them."
                    )
                extra.append(row)
        except DataError as err:
            raise SystemExit(str(err)) from None
        kept_extra = [r for r in extra if r["query"] not in held_texts and shows_no_held_doc(r)]
        fit += kept_extra
        n_extra = len(kept_extra)

    beir = args.data / "scifact"
    train_lines = (beir / "qrels" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    train_ids = {line.split("\t")[0] for line in train_lines[1:]}
    held_ids = set()
    for line in (beir / "queries.jsonl").open(encoding="utf-8"):
        q = json.loads(line)
        if q["text"] in held_texts and q["_id"] in train_ids:
            held_ids.add(q["_id"])

    (args.out / "beir" / "qrels").mkdir(parents=True, exist_ok=True)
    with (args.out / "fit.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in fit)
    for name in ("corpus.jsonl", "queries.jsonl"):
        link = args.out / "beir" / name
        if not link.exists():
            link.symlink_to((beir / name).resolve())
    kept = [train_lines[0]] + [line for line in train_lines[1:] if line.split("\t")[0] in held_ids]
    (args.out / "beir" / "qrels" / "heldout.tsv").write_text("".join(kept), encoding="utf-8")
    print(f"{len(fit)} training rows ({n_extra} from --extra-rows); {len(held_texts)} held-out query texts ({len(held_ids)} query ids, "
          f"{len(kept) - 1} judgements)")


if __name__ == "__main__":
    main()
