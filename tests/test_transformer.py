"""The transformer tier on a tiny randomly initialised BERT (seconds, CPU).

Tests that train or export need torch and transformers and skip cleanly without
them; the serving side (``triage.transformer``) is tested with a hand-built ONNX
graph and needs neither.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from triage.bundle import read_manifest, verify_files
from triage.transformer import TransformerScorer, TransformerTokenizer, head_tail

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:transformers.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:transformers.*"),
    pytest.mark.filterwarnings("ignore:.*TracerWarning.*"),
]

CATEGORIES = {
    "billing": ["多扣了费用", "账单金额不对", "重复扣款", "退款没有到账"],
    "network": ["信号很差", "网络断了", "上不了网", "宽带很慢"],
    "service": ["客服态度差", "电话没人接", "工作人员不理人", "投诉没人处理"],
}
URGENT = ["今天必须解决", "马上处理", "非常着急"]
FILLER = ["我是老用户", "请尽快回复", "谢谢", "已经好几天了", "", "上个月开始"]


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    cats = sorted(CATEGORIES)
    for i in range(n):
        cat = cats[i % 3]
        urgent = bool(rng.random() < 0.5)
        parts = [str(rng.choice(FILLER)), str(rng.choice(CATEGORIES[cat])), str(rng.choice(FILLER))]
        if urgent:
            parts.append(str(rng.choice(URGENT)))
        rows.append({"text": "，".join(p for p in parts if p) + f"（{i}）", "category": cat,
                     "urgency": "same_day" if urgent else "normal"})
    return rows


def _tiny_tokenizer_pieces() -> tuple[list[str], list[float]]:
    chars = sorted({c for texts in CATEGORIES.values() for t in texts for c in t}
                   | {c for t in URGENT + FILLER for c in t} | set("，（）0123456789abc"))
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "\u2581"] + chars + ["退款", "信号", "客服", "网络"]
    scores = [0.0] * 4 + [-2.0] + [-5.0] * len(chars) + [-4.0] * 4
    return pieces, scores


# --------------------------------------------------------------------------- serving, no torch
def test_head_tail_keeps_both_ends():
    ids = list(range(20))
    assert head_tail(ids, 30, 5) == ids
    assert head_tail(ids, 8, 5) == [0, 1, 2, 3, 4, 17, 18, 19]
    assert head_tail(ids, 8, 8) == list(range(8))
    assert head_tail(ids, 8, 0) == list(range(12, 20))


def _tokenizer():
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    pieces, scores = _tiny_tokenizer_pieces()
    tok = Tokenizer(models.Unigram(list(zip(pieces, scores)), unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Replace(Regex(" {2,}"), " ")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    return tok, len(pieces)


def test_tokenizer_truncates_head_and_tail():
    tok, _ = _tokenizer()
    tt = TransformerTokenizer(tok, max_length=10, head_tokens=5, pad_id=1)
    assert (tt.bos_id, tt.eos_id) == (0, 2)
    long_text = "退款" + "谢" * 30 + "马上处理"
    row = tt.ids([long_text])[0]
    full = tok.encode(long_text, add_special_tokens=False).ids
    assert len(row) == 10 and row[0] == 0 and row[-1] == 2
    assert row[1:6] == full[:5] and row[6:9] == full[-3:]
    ids, mask = tt(["退款", long_text])
    assert ids.shape == mask.shape == (2, 10)
    assert ids[0, mask[0].sum():].tolist() == [1] * (10 - mask[0].sum())


def _handmade_bundle(root: Path, fp32_noise: float | None = None,
                     urgency: tuple[str, ...] = ("normal", "same_day")) -> dict:
    """An ONNX graph with the transformer interface: masked mean of embeddings -> softmax heads.

    With ``fp32_noise`` the bundle also ships ``encoder/model.fp32.onnx``: the same graph
    with Gaussian noise of that scale on the head weights, standing in for the unquantised encoder.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    tok, vocab = _tokenizer()
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(vocab, 8)).astype(np.float32)
    heads = {"category": ["billing", "network", "service"], "urgency": list(urgency)}
    inits = [numpy_helper.from_array(emb, "E"), numpy_helper.from_array(np.array([2], dtype=np.int64), "ax2"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1")]
    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["h"], axis=0),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "ax2"], ["m3"]),
             helper.make_node("Mul", ["h", "m3"], ["hm"]),
             helper.make_node("ReduceSum", ["hm", "ax1"], ["s"], keepdims=0),
             helper.make_node("ReduceSum", ["mf", "ax1"], ["cnt"], keepdims=1),
             helper.make_node("Div", ["s", "cnt"], ["pooled"])]
    outputs = []
    for name, labels in heads.items():
        inits.append(numpy_helper.from_array(rng.normal(size=(8, len(labels))).astype(np.float32), f"W_{name}"))
        nodes += [helper.make_node("MatMul", ["pooled", f"W_{name}"], [f"z_{name}"]),
                  helper.make_node("Softmax", [f"z_{name}"], [f"probs_{name}"], axis=-1)]
        outputs.append(helper.make_tensor_value_info(f"probs_{name}", TensorProto.FLOAT, ["N", len(labels)]))
    graph = helper.make_graph(nodes, "tiny", [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "L"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "L"])], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (root / "encoder").mkdir(parents=True)
    (root / "tokenizer").mkdir()
    onnx.save(model, str(root / "encoder" / "model.int8.onnx"))
    if fp32_noise is not None:
        for init in model.graph.initializer:
            if init.name.startswith("W_"):
                w = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array(
                    (w + fp32_noise * rng.normal(size=w.shape)).astype(np.float32), init.name))
        onnx.save(model, str(root / "encoder" / "model.fp32.onnx"))
    tok.save(str(root / "tokenizer" / "tokenizer.json"))
    from triage.bundle import sha256_file

    manifest = {"schema_version": 1, "model_version": "tiny", "tier": "transformer",
                "heads": {h: {"labels": lb, "onnx": "encoder/model.int8.onnx", "output": f"probs_{h}",
                              "thresholds": {x: 0.0 for x in lb}} for h, lb in heads.items()},
                "features": {"type": "transformer", "vocabulary": "tokenizer/tokenizer.json",
                             "config": {"max_length": 16, "head_tokens": 8, "prefix": "", "pad_id": 1},
                             "onnx": {"serve": "encoder/model.int8.onnx",
                                      "available": sorted(str(p.relative_to(root))
                                                          for p in (root / "encoder").glob("*.onnx"))}}}
    manifest["files"] = {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    (root / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    return manifest


def test_scorer_on_handmade_bundle(tmp_path):
    _handmade_bundle(tmp_path)
    manifest = read_manifest(tmp_path)
    verify_files(tmp_path, manifest)
    scorer = TransformerScorer(tmp_path, manifest, batch_size=2)
    texts = ["退款没有到账", "信号很差，马上处理" * 5, "谢谢", "客服态度差"]
    probs = scorer.predict_proba(texts)
    assert set(probs) == {"category", "urgency"}
    assert probs["category"].shape == (4, 3) and probs["urgency"].shape == (4, 2)
    np.testing.assert_allclose(probs["category"].sum(1), 1.0, atol=1e-5)
    one = scorer.predict_proba([texts[1]])
    np.testing.assert_allclose(one["category"][0], probs["category"][1], atol=1e-5)  # padding/batching invariant
    assert scorer.predict_proba([])["urgency"].shape == (0, 2)


def test_scorer_rejects_mismatched_labels(tmp_path):
    from triage.errors import BundleError

    manifest = _handmade_bundle(tmp_path)
    manifest["heads"]["urgency"]["labels"] = ["a", "b", "c"]
    with pytest.raises(BundleError, match="urgency"):
        TransformerScorer(tmp_path, manifest)


def test_triage_load_scores_a_transformer_bundle_with_rules_and_due_time(tmp_path):
    import triage

    _handmade_bundle(tmp_path)
    model = triage.load(tmp_path)
    assert model.tier == "transformer"
    res = model.score({"text": "厨房煤气味很重，快来人", "received_at": "2026-11-24T10:00:00+08:00"}).to_dict()
    assert set(res) >= {"category", "urgency", "escalation", "needs_review", "model_version"}
    assert res["category"]["label"] in model.heads["category"].labels
    batch = model.score_batch(["退款没有到账", "  "], errors="return")
    assert isinstance(batch[1], triage.InvalidTicketError)


def test_serving_never_imports_torch(tmp_path):
    _handmade_bundle(tmp_path)
    code = ("import sys, json; from triage.bundle import read_manifest; from triage.transformer import "
            f"TransformerScorer; root={str(tmp_path)!r}; s=TransformerScorer(root, read_manifest(root)); "
            "s.predict_proba(['退款']); print(json.dumps([m for m in ('torch', 'transformers') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# --------------------------------------------------------------------------- training, needs torch
@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from training.transformer.backbone import unigram_tokenizer

    root = tmp_path_factory.mktemp("tiny-bert")
    pieces, scores = _tiny_tokenizer_pieces()
    tok = unigram_tokenizer(pieces, scores, unk=3, bos=0, eos=2, pad=1, charsmap=None)
    tok.save(str(root / "tokenizer.json"))
    config = transformers.BertConfig(vocab_size=len(pieces), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                     type_vocab_size=2, pad_token_id=1)
    import torch

    torch.manual_seed(0)
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(str(root))
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-data")
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _rows(150)), "utf-8")
    test = root / "test.jsonl"
    test.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _rows(300, seed=1)), "utf-8")
    return path, test


def _config(tiny_backbone, tiny_data, **kw):
    from training.transformer.train import TransformerConfig

    base = dict(data=[str(tiny_data[0])], backbone=str(tiny_backbone), layers=None, max_length=24,
                epochs=5, batch_size=8, lr=2e-3, head_lr=1e-2, dropout=0.0, dev_fraction=0.2, patience=5,
                keep_fp32=True, threads=1, checkpoint_every=3, seed=0)
    base.update(kw)
    return TransformerConfig(**base)


@pytest.fixture(scope="module")
def tiny_bundle(tiny_backbone, tiny_data, tmp_path_factory):
    from training.transformer.train import train_transformer

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    manifest = train_transformer(_config(tiny_backbone, tiny_data, prune_vocab=True), out)
    return out, manifest


def test_bundle_is_schema_1_and_verifies(tiny_bundle):
    out, manifest = tiny_bundle
    assert manifest["schema_version"] == 1 and manifest["tier"] == "transformer"
    on_disk = read_manifest(out)
    verify_files(out, on_disk)
    assert set(on_disk["heads"]) == {"category", "urgency"}
    assert on_disk["heads"]["category"]["labels"] == ["billing", "network", "service"]
    assert on_disk["heads"]["urgency"]["decision"] == {}  # labels are not the three SLA classes
    assert set(on_disk["heads"]["category"]["thresholds"]) == {"billing", "network", "service"}
    assert {"encoder/model.int8.onnx", "encoder/model.fp32.onnx", "tokenizer/tokenizer.json",
            "lexicons/rules.json"} <= set(on_disk["files"])
    assert on_disk["features"]["backbone"]["vocab_pruned"] is True
    assert not out.with_name(out.name + ".ckpt").exists()


def test_onnx_parity(tiny_bundle):
    _, manifest = tiny_bundle
    parity = manifest["metrics"]["parity"]
    assert parity["fp32_max_abs_diff"] <= 1e-4
    assert parity["n"] == 30 and 0.0 <= parity["int8_agreement_min"] <= 1.0  # the >= 99% gate: next test


def test_int8_agrees_with_fp32_on_test_split(tiny_bundle, tiny_data):
    out, manifest = tiny_bundle
    texts = [json.loads(line)["text"] for line in tiny_data[1].read_text("utf-8").splitlines()]
    from triage.normalize import normalize_text

    texts = [normalize_text(t) for t in texts]
    int8 = TransformerScorer(out, manifest).predict_proba(texts)
    fp32 = TransformerScorer(out, manifest, onnx_file="encoder/model.fp32.onnx").predict_proba(texts)
    for head in int8:
        assert (int8[head].argmax(1) == fp32[head].argmax(1)).mean() >= 0.99


def test_int8_weights_are_8_bit_blocks_and_recorded(tiny_bundle):
    import onnx

    out, manifest = tiny_bundle
    parity = manifest["metrics"]["parity"]
    assert parity["int8_scheme"] == "weights" and parity["int8_block_size"] == 64
    graph = onnx.load(str(out / "encoder" / "model.int8.onnx")).graph
    constant = {i.name for i in graph.initializer}
    assert any(n.op_type == "MatMulNBits" for n in graph.node)
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in constant]


def test_a_trained_int8_bundle_serves_with_torch_unimportable(tiny_bundle):
    out, _ = tiny_bundle
    code = ("import sys, json; sys.modules['torch'] = None; sys.modules['transformers'] = None; import triage; "
            f"m = triage.load({str(out)!r}); print(json.dumps(m.score('退款还没到账').to_dict()['category']['label']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(res.stdout) in ("billing", "network", "service")


def test_unknown_int8_scheme_is_refused(tiny_backbone, tiny_data, tmp_path):
    from training.transformer.train import train_transformer

    for bad in ({"int8": "int4"}, {"int8_block_size": 48}):
        with pytest.raises(ValueError, match="int8"):
            train_transformer(_config(tiny_backbone, tiny_data, **bad), tmp_path / "x")


def test_int8_mixed_precision_is_recorded_and_kept_in_the_served_file(tiny_backbone, tiny_data, tmp_path):
    import onnx

    from training.transformer.train import train_transformer

    out = tmp_path / "dynamic"
    manifest = train_transformer(_config(tiny_backbone, tiny_data, epochs=1, int8="dynamic"), out)
    assert manifest["metrics"]["parity"]["int8_scheme"] == "dynamic"
    mixed = manifest["metrics"]["parity"]["int8_mixed_precision"]
    assert mixed["candidates"] == 2  # one feed-forward down-projection per layer of the tiny encoder
    assert len(mixed["kept_fp32"]) <= 3 and set(mixed["kept_fp32"]) <= set(
        n.name for n in onnx.load(str(out / "encoder" / "model.fp32.onnx")).graph.node)
    if mixed["kept_fp32"]:
        assert mixed["error"] <= mixed["error_all_int8"] * 0.9
    served = {n.name: n.op_type for n in onnx.load(str(out / "encoder" / "model.int8.onnx")).graph.node}
    for name in mixed["kept_fp32"]:
        assert served[name] == "MatMul"


def test_down_projections_and_keep_fp32(tiny_backbone, tmp_path):
    """down_projections finds the [intermediate, hidden] MatMuls; quantize_int8 leaves the named ones in fp32."""
    import onnx
    import torch
    import transformers
    from tokenizers import Tokenizer

    from training.transformer.export import (choose_fp32_matmuls, down_projections, export_onnx,
                                             quantize_int8)
    from training.transformer.modeling import ExportModule, MultiTaskModel

    enc = transformers.BertModel.from_pretrained(str(tiny_backbone), add_pooling_layer=False,
                                                 attn_implementation="eager")
    torch.manual_seed(2)
    module = ExportModule(MultiTaskModel(enc, {"a": 3}), {}).eval()
    tt = TransformerTokenizer(Tokenizer.from_file(str(tiny_backbone / "tokenizer.json")), max_length=20, pad_id=1)
    texts = ["退款没有到账", "信号很差，宽带断了", "客服态度差", "电梯坏了有人被困"]
    fp32 = export_onnx(module, tmp_path / "fp32.onnx", tt, texts)
    down = down_projections(fp32)
    assert len(down) == 2 and all("output/dense" in n and "attention" not in n for n in down)

    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", keep_fp32=down[:1])
    ops = {n.name: n.op_type for n in onnx.load(str(int8)).graph.node}
    assert ops[down[0]] == "MatMul" and down[1] not in ops  # replaced by its integer form
    kept, report = choose_fp32_matmuls(fp32, tmp_path, tt, texts, ["a"], max_nodes=0)
    assert kept == [] and report["kept_fp32"] == [] and report["error"] == report["error_all_int8"] >= 0.0


def test_fp32_onnx_matches_torch_long_texts(tiny_backbone):
    """Head+tail truncation and padding: ONNX fp32 equals torch to 1e-4 on mixed-length batches."""
    import torch
    import transformers

    from training.transformer.export import export_onnx, run_onnx, run_torch, ort_session
    from training.transformer.modeling import ExportModule, MultiTaskModel
    from tokenizers import Tokenizer

    enc = transformers.BertModel.from_pretrained(str(tiny_backbone), add_pooling_layer=False,
                                                 attn_implementation="eager")
    torch.manual_seed(1)
    module = ExportModule(MultiTaskModel(enc, {"a": 3, "b": 2}), {"a": 1.5, "b": 0.7}).eval()
    tt = TransformerTokenizer(Tokenizer.from_file(str(tiny_backbone / "tokenizer.json")), max_length=20, pad_id=1)
    texts = ["退款", "信号很差" * 10, "客服态度差，今天必须解决", "谢谢" * 30]
    path = export_onnx(module, tiny_backbone / "parity.onnx", tt, texts)
    ref = run_torch(module, tt, texts, batch_size=3)
    got = run_onnx(ort_session(path), tt, texts, ["a", "b"], batch_size=3)
    for k in ("a", "b"):
        assert np.abs(ref[k] - got[k]).max() <= 1e-4


def test_training_learns_and_scores_like_the_bundle(tiny_bundle):
    out, manifest = tiny_bundle
    assert manifest["metrics"]["dev"]["heads"]["category"]["accuracy"] >= 0.6
    scorer = TransformerScorer(out, read_manifest(out))
    probs = scorer.predict_proba(["退款没有到账，今天必须解决", "宽带很慢"])
    assert probs["category"].shape == (2, 3)


def test_training_is_seeded(tiny_backbone, tiny_data, tmp_path):
    from training.transformer.train import train_transformer

    a = train_transformer(_config(tiny_backbone, tiny_data, epochs=1, keep_fp32=False), tmp_path / "a")
    b = train_transformer(_config(tiny_backbone, tiny_data, epochs=1, keep_fp32=False), tmp_path / "b")
    assert a["heads"]["category"]["temperature"] == b["heads"]["category"]["temperature"]
    assert a["metrics"]["dev"] == b["metrics"]["dev"]


def test_resume_from_checkpoint(tiny_backbone, tiny_data, tmp_path):
    """A run stopped by its time budget checkpoints mid-epoch; running it again resumes there
    and ends exactly where an uninterrupted run ends."""
    import torch

    from training.transformer.train import train_transformer

    full = train_transformer(_config(tiny_backbone, tiny_data, keep_fp32=False), tmp_path / "full")
    ckpt = tmp_path / "ckpt"
    train_transformer(_config(tiny_backbone, tiny_data, keep_fp32=False, checkpoint_dir=str(ckpt),
                              keep_checkpoint=True, max_train_minutes=1e-9), tmp_path / "cut")
    cut = torch.load(ckpt / "state.pt", weights_only=False)["state"]
    assert (cut["epoch"], cut["step_in_epoch"], cut["global_step"]) == (0, 1, 1)
    resumed = train_transformer(_config(tiny_backbone, tiny_data, keep_fp32=False, checkpoint_dir=str(ckpt)),
                                tmp_path / "resumed")
    history = resumed["training"]["history"]
    assert history[0]["partial"] is True and [h["epoch"] for h in history] == [1, 1, 2, 3, 4, 5]
    assert [h["dev_macro_f1"] for h in history[1:]] == [h["dev_macro_f1"] for h in full["training"]["history"]]
    assert resumed["metrics"]["dev"] == full["metrics"]["dev"]
    assert not ckpt.exists()


def test_prune_vocabulary_keeps_cjk_singles_and_used_pieces(tiny_backbone):
    pytest.importorskip("torch")
    from training.transformer.backbone import load_backbone, prune_vocabulary

    model, tok = load_backbone(tiny_backbone)
    before = tok.encode("退款没有到账").tokens
    model, small, kept = prune_vocabulary(model, tok, ["退款没有到账"])
    assert small.encode("退款没有到账").tokens == before
    assert small.get_vocab_size() == len(kept) == model.get_input_embeddings().weight.shape[0]
    assert "信号" not in small.get_vocab() and "信" in small.get_vocab()  # unused pair dropped, singles kept
    assert small.token_to_id("<s>") == 0 and small.token_to_id("</s>") == 2


def test_e5s1_reader_and_dequantiser(tmp_path):
    """A hand-written two-block q4_0 tensor: byte j -> weights j (low nibble) and j+16 (high)."""
    from training.transformer.backbone import dequantize_q4_0

    d = np.array([0.5, 2.0], dtype="<f2")
    qs = np.zeros((2, 16), dtype=np.uint8)
    qs[0, 0] = 0x9F  # weight 0 = (15-8)*0.5, weight 16 = (9-8)*0.5
    qs[1, 3] = 0x08  # weight 32+3 = 0, weight 32+19 = (0-8)*2
    raw = b"".join(d[i].tobytes() + qs[i].tobytes() for i in range(2))
    w = dequantize_q4_0(raw, 64)
    assert w[0] == 3.5 and w[16] == 0.5 and w[35] == 0.0 and w[51] == -16.0
    assert w[1] == -4.0  # nibble 0 -> -8 * 0.5


# --------------------------------------------------------------------------- distillation
def test_soft_loss_is_zero_when_the_student_matches_the_teacher():
    torch = pytest.importorskip("torch")
    from training.transformer.distill import soft_loss

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    teacher = torch.softmax(logits, dim=1)
    assert float(soft_loss(logits, teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_loss(-logits, teacher, 2.0)) > 0.1


def test_distillation_adds_unseen_unlabelled_texts_and_records_the_teacher(tiny_backbone, tiny_data, tiny_bundle,
                                                                            tmp_path):
    from training.transformer.train import train_transformer

    teacher, teacher_manifest = tiny_bundle
    train_rows = [json.loads(line) for line in tiny_data[0].read_text("utf-8").splitlines()]
    unlabeled = tmp_path / "history.jsonl"
    texts = [{"text": r["text"]} for r in _rows(40, seed=7)] + [{"text": train_rows[0]["text"]}]
    unlabeled.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in texts), "utf-8")
    manifest = train_transformer(_config(tiny_backbone, tiny_data, epochs=2, keep_fp32=False, teacher=str(teacher),
                                         unlabeled_data=[str(unlabeled)], distill_weight=0.7), tmp_path / "student")
    record = manifest["training"]["distillation"]
    assert record["teacher"]["model_version"] == teacher_manifest["model_version"]
    assert record["teacher"]["heads"] == ["category", "urgency"]
    assert (record["unlabeled_read"], record["unlabeled_used"]) == (41, 40)  # a training text is not added twice
    assert manifest["training"]["n_train"] == 120 + 40
    assert manifest["heads"]["category"]["labels"] == ["billing", "network", "service"]


def test_distillation_refuses_a_teacher_with_other_labels_and_unlabelled_data_without_teacher(
        tiny_backbone, tiny_data, tiny_bundle, tmp_path):
    from training.transformer.train import train_transformer

    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"text": r["text"], "category": "x" if i % 2 else "y"}, ensure_ascii=False)
                             + "\n" for i, r in enumerate(_rows(30))), "utf-8")
    with pytest.raises(ValueError, match="head 'category' predicts"):
        train_transformer(_config(tiny_backbone, (other, None), teacher=str(tiny_bundle[0])), tmp_path / "a")
    with pytest.raises(ValueError, match="needs a teacher"):
        train_transformer(_config(tiny_backbone, tiny_data, unlabeled_data=[str(other)]), tmp_path / "b")
