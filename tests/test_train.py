"""Trainer: the unified loss against hand computations, data errors, steps, heads-only, save/load, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from m3_rag.train import DataError, TrainConfig, Trainer, load_jsonl, m3_loss
from m3_rag.train.model import HeadSpec, M3Heads, head_outputs

# ----------------------------------------------------------------------------- hand-computed loss


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    z = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - z for x in row]


def _softmax(row: list[float]) -> list[float]:
    return [math.exp(x) for x in _log_softmax(row)]


def _hand_loss(d, s, c, targets, t=0.02, teacher=None):
    """BGE-M3's loss written out with plain Python floats, one query at a time."""
    n = len(d)
    scale = lambda m: [[x / t for x in row] for row in m]  # noqa: E731
    d, s, c = scale(d), scale(s), scale(c)
    ens = [[a + 0.3 * b + e for a, b, e in zip(*rows)] for rows in zip(d, s, c)]

    def nce(m):
        if teacher is None:
            return -sum(_log_softmax(m[i])[targets[i]] for i in range(n)) / n
        return -sum(sum(p * l for p, l in zip(teacher[i], _log_softmax(m[i]))) for i in range(n)) / n

    def kd(m):
        return -sum(sum(p * l for p, l in zip(_softmax(ens[i]), _log_softmax(m[i]))) for i in range(n)) / n

    terms = {"dense": nce(d), "sparse": nce(s), "colbert": nce(c), "ensemble": nce(ens),
             "kd_dense": kd(d), "kd_sparse": kd(s), "kd_colbert": kd(c)}  # fmt: skip
    base = (terms["dense"] + terms["ensemble"] + 0.1 * terms["sparse"] + terms["colbert"]) / 4
    distill = (terms["kd_dense"] + 0.1 * terms["kd_sparse"] + terms["kd_colbert"]) / 3
    terms["total"] = (base + distill) / 2
    return terms


# Two queries, group size 2 (positive first), in-batch: each query sees all 4 passages.
# Spreads of a few hundredths: at temperature 0.02 that is a few logits, so no term saturates.
DENSE = [[0.53, 0.50, 0.49, 0.51], [0.47, 0.50, 0.52, 0.53]]
SPARSE = [[0.20, 0.00, 0.01, 0.06], [0.00, 0.03, 0.09, 0.11]]
COLBERT = [[0.61, 0.58, 0.60, 0.55], [0.50, 0.52, 0.57, 0.56]]
TARGETS = [0, 2]


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_every_loss_term_matches_a_hand_computation():
    got = m3_loss(_t(DENSE), _t(SPARSE), _t(COLBERT), torch.tensor(TARGETS)).as_floats()
    want = _hand_loss(DENSE, SPARSE, COLBERT, TARGETS)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9), key
    # Not degenerate: the ensemble is not simply one of the modes.
    assert len({round(want[k], 4) for k in ("dense", "sparse", "colbert", "ensemble")}) == 4


def test_teacher_scores_replace_the_one_hot_target():
    teacher = [[0.7, 0.3, 0.0, 0.0], [0.0, 0.0, 0.6, 0.4]]
    got = m3_loss(
        _t(DENSE), _t(SPARSE), _t(COLBERT), torch.tensor(TARGETS), teacher=_t(teacher),
    ).as_floats()  # fmt: skip
    want = _hand_loss(DENSE, SPARSE, COLBERT, TARGETS, teacher=teacher)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9), key
    assert got["dense"] != pytest.approx(_hand_loss(DENSE, SPARSE, COLBERT, TARGETS)["dense"], rel=1e-3)


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="share one"):
        m3_loss(torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 2]))


# ------------------------------------------------------------------------------------- the data


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_rows_name_their_line(tmp_path):
    good = json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]})
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        load_jsonl(_write(tmp_path / "bad.jsonl", [good, good, "{oops"]))
    with pytest.raises(DataError, match=r"bad\.jsonl:2: 'pos' is empty"):
        load_jsonl(_write(tmp_path / "bad.jsonl", [good, json.dumps({"query": "q", "pos": []})]))
    row = {"query": "q", "pos": ["p"], "neg": ["a", "b"], "pos_scores": [1.0], "neg_scores": [0.5]}
    with pytest.raises(DataError, match=r":1: 'neg_scores' has 1 scores but 'neg' has 2"):
        load_jsonl(_write(tmp_path / "bad.jsonl", [json.dumps(row)]))
    with pytest.raises(DataError, match=r":1: 'query'"):
        load_jsonl(_write(tmp_path / "bad.jsonl", [json.dumps({"query": 3, "pos": ["p"]})]))


def test_rows_load_with_optional_teacher_scores(tmp_path):
    row = {"query": "q", "pos": ["p"], "neg": ["a", "b"], "pos_scores": [1], "neg_scores": [0.5, 0.25], "id": 7}
    (ex,) = load_jsonl(_write(tmp_path / "ok.jsonl", [json.dumps(row)]))
    assert ex.neg == ("a", "b") and ex.pos_scores == (1.0,) and ex.neg_scores == (0.5, 0.25)


# ----------------------------------------------------------------------------------- the trainer


@pytest.fixture(scope="module")
def train_file(tmp_path_factory, data_dir):
    """16 SciFact train rows, passages cut short so the tiny model runs fast."""
    rows = []
    with open(data_dir / "train" / "scifact_train.jsonl", encoding="utf-8") as f:
        for line in list(f)[:16]:
            r = json.loads(line)
            rows.append({"query": r["query"], "pos": [p[:300] for p in r["pos"]], "neg": [n[:300] for n in r["neg"]]})
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(tiny_checkpoint, train_file, out, **kw) -> TrainConfig:
    base = dict(model=str(tiny_checkpoint), data=(str(train_file),), output_dir=str(out), batch_size=4, group_size=3,
                passage_max_length=64, query_max_length=32, head_lr=1e-2, lr=1e-3, device="cpu", show_progress=False,
                warmup_ratio=0.0)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _one_step_lowers_the_loss(trainer: Trainer) -> None:
    rows = trainer.epoch_batches(0)[0]
    torch.manual_seed(0)
    before = trainer.compute_loss(rows, step=0).total
    trainer.optimizer.zero_grad()
    before.backward()
    trainer.optimizer.step()
    torch.manual_seed(0)
    after = trainer.compute_loss(rows, step=0).total
    assert after.item() < before.item()


def test_one_step_lowers_the_loss_full_model(tiny_checkpoint, train_file, tmp_path):
    trainer = Trainer(_config(tiny_checkpoint, train_file, tmp_path, in_batch_negatives=False))
    trainer.backbone.eval()  # no dropout: the same batch must give the same loss before the step
    _one_step_lowers_the_loss(trainer)


def test_one_step_lowers_the_loss_heads_only(tiny_checkpoint, train_file, tmp_path):
    trainer = Trainer(_config(tiny_checkpoint, train_file, tmp_path, heads_only=True, new_heads=True))
    _one_step_lowers_the_loss(trainer)


def test_heads_only_leaves_the_backbone_unchanged_and_round_trips(tiny_checkpoint, train_file, tmp_path):
    from m3_rag import M3Encoder

    config = _config(tiny_checkpoint, train_file, tmp_path / "out", heads_only=True, epochs=2, pooling="mean")
    trainer = Trainer(config)
    backbone_before = {k: v.clone() for k, v in trainer.backbone.state_dict().items()}
    heads_before = {k: v.clone() for k, v in trainer.heads.state_dict().items()}
    result = trainer.train()
    assert result.steps == 8
    for k, v in trainer.backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k]), k
    assert any(not torch.equal(v, heads_before[k]) for k, v in trainer.heads.state_dict().items())

    out = Path(result.output_dir)
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["colbert_linear.pt", "m3_config.json", "sparse_linear.pt"]
    m3_config = json.loads((out / "m3_config.json").read_text())
    assert m3_config["pooling"] == "mean" and Path(m3_config["backbone"]) == tiny_checkpoint.resolve()

    # The inference encoder loads what was saved and computes what the training forward computes.
    enc = M3Encoder.from_pretrained(out, device="cpu")
    texts = ["Vitamin D deficiency raises fracture risk.", "ALDH1 expression is linked to poor prognosis."]
    got = enc.encode_documents(texts)
    batch = trainer.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = trainer.backbone(**batch).last_hidden_state
        reps = head_outputs(hidden, batch["input_ids"], batch["attention_mask"], trainer.heads, trainer.spec)
    np.testing.assert_allclose(got.dense, reps.dense.numpy(), atol=1e-5)
    for i in range(2):
        nz = torch.nonzero(reps.sparse[i]).squeeze(-1)
        assert got.sparse[i].indices.tolist() == nz.tolist()
        np.testing.assert_allclose(got.sparse[i].values, reps.sparse[i, nz].numpy(), atol=1e-5)
        rows = reps.colbert_mask[i]
        np.testing.assert_allclose(got.colbert[i], reps.colbert[i][rows].numpy(), atol=1e-5)


def test_full_training_saves_the_backbone(tiny_checkpoint, train_file, tmp_path):
    from m3_rag import M3Encoder

    result = Trainer(_config(tiny_checkpoint, train_file, tmp_path / "full", epochs=1)).train()
    out = Path(result.output_dir)
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert json.loads((out / "m3_config.json").read_text())["backbone"] is None
    enc = M3Encoder.from_pretrained(out, device="cpu")
    assert enc.encode_queries(["a question"]).dense.shape == (1, 32)


def test_interrupted_run_resumes_to_the_same_heads(tiny_checkpoint, train_file, tmp_path, monkeypatch):
    kw = dict(heads_only=True, epochs=2, save_steps=3, state_cache_dir=str(tmp_path / "states"))
    straight = Trainer(_config(tiny_checkpoint, train_file, tmp_path / "a", **kw))
    straight.train()

    broken = Trainer(_config(tiny_checkpoint, train_file, tmp_path / "b", **kw))
    real = broken.compute_loss

    def stop_at_5(rows, step):
        if step == 5:
            raise KeyboardInterrupt
        return real(rows, step)

    monkeypatch.setattr(broken, "compute_loss", stop_at_5)
    with pytest.raises(KeyboardInterrupt):
        broken.train()
    assert json.loads((tmp_path / "b" / "checkpoint" / "trainer_state.json").read_text())["step"] == 3

    resumed = Trainer(_config(tiny_checkpoint, train_file, tmp_path / "b", **kw))
    result = resumed.train()
    assert result.resumed_from_step == 3 and result.steps == 8
    for name in ("colbert_linear.pt", "sparse_linear.pt"):
        a = torch.load(tmp_path / "a" / name, weights_only=True)
        b = torch.load(tmp_path / "b" / name, weights_only=True)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert not (tmp_path / "b" / "checkpoint").exists()


def test_resume_refuses_a_checkpoint_of_other_options(tiny_checkpoint, train_file, tmp_path, monkeypatch):
    kw = dict(heads_only=True, epochs=2, save_steps=2, state_cache_dir=str(tmp_path / "states"))
    t = Trainer(_config(tiny_checkpoint, train_file, tmp_path / "c", **kw))
    t.save_checkpoint()
    other = Trainer(_config(tiny_checkpoint, train_file, tmp_path / "c", **{**kw, "head_lr": 0.5}))
    with pytest.raises(ValueError, match="head_lr"):
        other.train()


def test_missing_heads_say_how_to_start_fresh(tmp_path, tiny_checkpoint, train_file):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_checkpoint, bare)
    (bare / "sparse_linear.pt").unlink()
    with pytest.raises(FileNotFoundError, match="--new-heads"):
        Trainer(_config(bare, train_file, tmp_path / "o"))


def test_fresh_sparse_head_starts_as_token_overlap(tiny_checkpoint):
    from transformers import AutoTokenizer

    heads = M3Heads.fresh(32, sparse_bias=0.1)
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    spec = HeadSpec.from_tokenizer(tok, "cls", 8000)
    batch = tok(["alpha beta alpha"], return_tensors="pt")
    reps = head_outputs(torch.randn(1, batch["input_ids"].shape[1], 32), batch["input_ids"], batch["attention_mask"], heads, spec)
    ids = set(batch["input_ids"][0].tolist()) - set(spec.unused_token_ids)
    nz = torch.nonzero(reps.sparse[0]).squeeze(-1).tolist()
    assert set(nz) == ids and torch.allclose(reps.sparse[0, nz], torch.tensor(0.1))


def test_cli_trains_and_writes_the_m3_layout(tiny_checkpoint, train_file, tmp_path):
    from m3_rag.train.cli import main

    out = tmp_path / "cli"
    with pytest.raises(SystemExit) as done:
        main(["train", str(train_file), "-o", str(out), "--model", str(tiny_checkpoint), "--heads-only",
              "--batch-size", "8", "--group-size", "2", "--passage-max-length", "48", "--device", "cpu",
              "--no-progress", "--mode-weights", "0.2,0.3,0.5"])  # fmt: skip
    assert done.value.code == 0
    assert json.loads((out / "m3_config.json").read_text())["weights"] == [0.2, 0.3, 0.5]


def test_state_cached_encoder_matches_the_encoder_and_reuses_states(tiny_checkpoint, tiny_encoder, tmp_path):
    from m3_rag.train.states_encoder import StateCachedEncoder

    texts = ["Vitamin D deficiency raises fracture risk.", "ALDH1 expression is linked to poor prognosis in breast cancer."]
    cached = StateCachedEncoder(tiny_checkpoint, tmp_path / "states", show_progress=False)
    got = cached.encode_documents(texts)
    want = tiny_encoder.encode_documents(texts)
    np.testing.assert_allclose(got.dense, want.dense, atol=5e-3)  # float16 states
    for a, b in zip(got.sparse, want.sparse):
        assert a.indices.tolist() == b.indices.tolist()
        np.testing.assert_allclose(a.values, b.values, atol=5e-3)
    for a, b in zip(got.colbert, want.colbert):
        np.testing.assert_allclose(a, b, atol=5e-3)
    shards = sorted((tmp_path / "states").rglob("shard-*.safetensors"))
    assert len(shards) == 1
    cached.encode_documents(texts[::-1])  # all cached: no new shard
    assert sorted((tmp_path / "states").rglob("shard-*.safetensors")) == shards


def test_two_state_stores_on_one_folder_keep_each_other_s_shards(tiny_checkpoint, tmp_path):
    # The query and document stores share a folder when their max lengths match; named by
    # count, the second store's shard overwrote the first's.
    from m3_rag.loading import load_backbone, resolve_model
    from m3_rag.train.states import StateStore

    files = resolve_model(tiny_checkpoint)
    model, tokenizer = load_backbone(files.backbone_dir, dtype=torch.float32)
    first, second = (StateStore(tmp_path / "s", files.backbone_dir, 64) for _ in range(2))
    for store in (first, second):
        store.get(model, tokenizer, [], show_progress=False)  # both load the (empty) folder first
    first.get(model, tokenizer, ["a query about fractures"], show_progress=False)
    second.get(model, tokenizer, ["an abstract about breast cancer"], show_progress=False)
    first.get(model, tokenizer, ["another query"], show_progress=False)
    assert len(list((tmp_path / "s").rglob("shard-*.safetensors"))) == 3

    def no_compute(*a, **k):
        raise AssertionError("a cached text was computed again")

    reader = StateStore(tmp_path / "s", files.backbone_dir, 64)
    import m3_rag.train.states as states

    texts = ["an abstract about breast cancer", "a query about fractures", "another query"]
    want = states.compute_states(model, tokenizer, texts, max_length=64, show_progress=False)
    real, states.compute_states = states.compute_states, no_compute
    try:
        got = reader.get(model, tokenizer, texts, show_progress=False)
    finally:
        states.compute_states = real
    assert torch.equal(got.offsets, want.offsets) and torch.equal(got.input_ids, want.input_ids)
    torch.testing.assert_close(got.states, want.states)


def test_subset_loss_is_the_mean_infonce_of_its_modes():
    from m3_rag.train.losses import subset_loss

    got = subset_loss({"sparse": _t(SPARSE), "dense": _t(DENSE)}, torch.tensor(TARGETS)).as_floats()
    want = _hand_loss(DENSE, SPARSE, COLBERT, TARGETS)
    assert got["total"] == pytest.approx((want["sparse"] + want["dense"]) / 2, rel=1e-9)
    assert got["colbert"] == 0.0 and got["kd_sparse"] == 0.0


def test_sparse_only_training_moves_only_the_sparse_head(tiny_checkpoint, train_file, tmp_path):
    trainer = Trainer(_config(tiny_checkpoint, train_file, tmp_path, heads_only=True, new_heads=True, modes=("sparse",)))
    colbert_before = trainer.heads.colbert_linear.weight.detach().clone()
    sparse_before = trainer.heads.sparse_linear.weight.detach().clone()
    trainer.train()
    assert torch.equal(trainer.heads.colbert_linear.weight, colbert_before)
    assert not torch.equal(trainer.heads.sparse_linear.weight, sparse_before)
