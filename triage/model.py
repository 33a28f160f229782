"""The inference object: load a bundle, score tickets. Nothing here trains."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from triage.bundle import read_json_file, read_manifest, verify_files
from triage.calendar import BusinessCalendar
from triage.errors import BundleError, InvalidTicketError
from triage.features import WORD_PREFIX, FeatureConfig, Featurizer, frequent_first
from triage.normalize import DEFAULT_MAX_CHARS, normalize_text, validate_text
from triage.rules import URGENCY_ORDER, RuleSet, load_rules, max_urgency
from triage.tokenize import WordTokenizer, read_userdict

_DIGIT = re.compile(r"\d")
TOP_K = 3
REVIEW_FLAGS = ("self_harm_threat", "injury")
FLAG_PREFIX = "flag:"
MEMBER_URGENCY = "urgency@member"  # an ensemble member's urgency probabilities, for its same_day floor
EVIDENCE_FEATURES = 3


@dataclass(frozen=True)
class Ticket:
    text: str
    id: str | None = None
    received_at: dt.datetime | None = None
    channel: str | None = None

    @classmethod
    def from_obj(cls, obj: Any, tz: str) -> "Ticket":
        """Accept a Ticket, a mapping with ``text`` and optional fields, or a bare string."""
        if isinstance(obj, Ticket):
            ticket = obj
        elif isinstance(obj, str):
            ticket = cls(text=obj)
        elif isinstance(obj, Mapping):
            ticket = cls(text=obj.get("text"), id=obj.get("id"),
                         received_at=obj.get("received_at"), channel=obj.get("channel"))
        else:
            raise InvalidTicketError(f"a ticket must be an object with 'text', not {type(obj).__name__}",
                                     code="bad_type", field="")
        if ticket.id is not None and not isinstance(ticket.id, (str, int)):
            raise InvalidTicketError("ticket id must be a string or integer", code="bad_type", field="id")
        if ticket.channel is not None and not isinstance(ticket.channel, str):
            raise InvalidTicketError("channel must be a string", code="bad_type", field="channel")
        return cls(text=ticket.text, id=None if ticket.id is None else str(ticket.id),
                   received_at=parse_received_at(ticket.received_at, tz), channel=ticket.channel)


def parse_received_at(value, tz: str) -> dt.datetime:
    """A timezone-aware datetime; now (in ``tz``) when missing; naive times are taken as ``tz``."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    if value is None:
        return dt.datetime.now(zone)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidTicketError(f"received_at {value!r} is not an ISO 8601 time",
                                     code="bad_received_at", field="received_at") from None
    if not isinstance(value, dt.datetime):
        raise InvalidTicketError("received_at must be an ISO 8601 string", code="bad_received_at",
                                 field="received_at")
    if not 1970 <= value.year <= 2999:
        raise InvalidTicketError(f"received_at year {value.year} is outside 1970-2999", code="bad_received_at",
                                 field="received_at")
    return value if value.tzinfo else value.replace(tzinfo=zone)


@dataclass
class HeadPrediction:
    label: str
    confidence: float
    top: list[tuple[str, float]]
    threshold: float
    needs_review: bool

    def to_dict(self) -> dict:
        return {"label": self.label, "confidence": round(self.confidence, 6),
                "top": [{"label": lb, "probability": round(p, 6)} for lb, p in self.top],
                "needs_review": self.needs_review}


@dataclass
class TriageResult:
    id: str | None
    heads: dict[str, HeadPrediction]
    urgency_reasons: list[dict] = field(default_factory=list)
    escalation: dict[str, list[dict]] = field(default_factory=dict)
    needs_review: bool = False
    review_reasons: list[str] = field(default_factory=list)
    received_at: dt.datetime | None = None
    due_at: dt.datetime | None = None
    model_version: str = ""

    def label(self, head: str) -> str:
        return self.heads[head].label

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"id": self.id}
        for name, pred in self.heads.items():
            out[name] = pred.to_dict()
        if "urgency" in out:
            out["urgency"]["reasons"] = self.urgency_reasons
        out["escalation"] = [{"flag": flag, "evidence": ev} for flag, ev in self.escalation.items()]
        out["needs_review"] = self.needs_review
        out["review_reasons"] = self.review_reasons
        out["received_at"] = self.received_at.isoformat() if self.received_at else None
        out["due_at"] = self.due_at.isoformat() if self.due_at else None
        out["model_version"] = self.model_version
        return out


class _Head:
    """One head's labels, thresholds and decision settings; its graph runs in the shared session."""

    def __init__(self, name: str, spec: dict, n_outputs: int):
        self.name = name
        self.labels: list[str] = list(spec["labels"])
        self.thresholds = np.array([float(spec.get("thresholds", {}).get(lb, 0.0)) for lb in self.labels])
        self.decision = spec.get("decision", {})
        if n_outputs != len(self.labels):
            raise BundleError(f"head {name!r}: ONNX output has {n_outputs} classes, manifest lists {len(self.labels)}")


def compose_heads(paths: dict[str, Path], row_order: np.ndarray | None = None):
    """One ONNX model that runs every linear head on the shared sparse input.

    Each head stays its own file in the bundle (``W`` table and bias ``b``); at load time
    their tables are concatenated so a batch costs one Gather, one Einsum, one Add and a
    Softmax per head, in a single onnxruntime call. Outputs are named after the heads.
    ``row_order`` renumbers the feature rows (``features.frequent_first``); the padding
    row stays last.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    tables, biases, widths = [], [], []
    for head, path in paths.items():
        try:
            graph = onnx.load(str(path)).graph
        except Exception as exc:  # onnx raises DecodeError and friends
            raise BundleError(f"cannot read ONNX head {path.name}: {exc}") from exc
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        if {i.name for i in graph.input} != {"indices", "weights"} or "W" not in inits or "b" not in inits:
            raise BundleError(f"ONNX head {path.name} is not a triage linear head")
        if tables and inits["W"].shape[0] != tables[0].shape[0]:
            raise BundleError(f"ONNX head {path.name} has {inits['W'].shape[0] - 1} features, "
                              f"the others {tables[0].shape[0] - 1}")
        tables.append(inits["W"])
        biases.append(inits["b"])
        widths.append(inits["W"].shape[1])
    names = list(paths)
    table = np.concatenate(tables, axis=1).astype(np.float32)
    if row_order is not None:
        table = table[np.append(row_order, len(table) - 1)]
    nodes = [
        helper.make_node("Gather", ["W", "indices"], ["rows"], axis=0),
        helper.make_node("Einsum", ["weights", "rows"], ["summed"], equation="nl,nlc->nc"),
        helper.make_node("Add", ["summed", "b"], ["logits"]),
        helper.make_node("Split", ["logits", "split"], [f"{h}/logits" for h in names], axis=1),
    ] + [helper.make_node("Softmax", [f"{h}/logits"], [h], axis=-1) for h in names]
    inits = [numpy_helper.from_array(table, "W"),
             numpy_helper.from_array(np.concatenate(biases).astype(np.float32), "b"),
             numpy_helper.from_array(np.array(widths, dtype=np.int64), "split")]
    graph = helper.make_graph(
        nodes, "triage_heads",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["N", "L"]),
         helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["N", "L"])],
        [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["N", w]) for h, w in zip(names, widths)],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="triage")
    model.ir_version = 8
    return model


class Model:
    """A loaded bundle. ``score`` and ``score_batch`` are safe to call from many threads."""

    def __init__(self, path: str | Path, *, verify: bool = True, max_chars: int | None = None,
                 calendar: BusinessCalendar | None = None, threads: int = 1, onnx_file: str | None = None):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if verify:
            verify_files(self.path, self.manifest)
        self.model_version: str = self.manifest["model_version"]
        self.max_chars = max_chars or self.manifest.get("limits", {}).get("max_chars", DEFAULT_MAX_CHARS)
        self.calendar = calendar or BusinessCalendar.from_dict(self.manifest.get("calendar"))
        self.tier = self.manifest.get("tier", "linear")
        self.rules: RuleSet | None = self._load_rules()
        if onnx_file is not None and self.tier != "transformer":
            raise BundleError(f"onnx_file picks one of a transformer bundle's files; {self.path} is {self.tier}")
        if self.tier == "transformer":
            from triage.transformer import TransformerScorer

            self.featurizer = None
            available = self.manifest.get("features", {}).get("onnx", {}).get("available", [])
            if onnx_file is not None and onnx_file not in available:
                raise BundleError(f"{self.path} ships no ONNX file {onnx_file!r} (it has {available})")
            self.scorer = TransformerScorer(self.path, self.manifest, threads=threads, onnx_file=onnx_file)
            self.heads = {name: _Head(name, spec, len(spec["labels"])) for name, spec in self.manifest["heads"].items()}
            self.flag_heads = {}
        elif self.tier == "linear":
            self.featurizer, self._row_order = self._load_featurizer()
            specs = {**self.manifest["heads"],
                     **{FLAG_PREFIX + f: spec for f, spec in self.manifest.get("flag_heads", {}).items()}}
            self.session = self._session(specs, threads)
            n_out = {o.name: o.shape[-1] for o in self.session.get_outputs()}
            self._outputs = list(specs)
            self.heads = {name: _Head(name, spec, n_out[name]) for name, spec in self.manifest["heads"].items()}
            self.flag_heads = {f: _Head(FLAG_PREFIX + f, spec, n_out[FLAG_PREFIX + f])
                               for f, spec in self.manifest.get("flag_heads", {}).items()}
            self._pad_index = self.featurizer.n_features
            if self.featurizer.uses_rule_states and self.rules is None:
                raise BundleError("the features use rule states but the bundle ships no rules")
        elif self.tier == "ensemble":
            self._init_ensemble(threads=threads)
        else:
            raise BundleError(f"unknown model tier {self.tier!r} "
                              "(this triage serves 'linear', 'transformer' and 'ensemble')")
        self._flag_levels = ({r.flag: r.level for r in self.rules.rules if r.kind == "flag" and r.level}
                             if self.rules else {})
        if self.tier == "ensemble":
            source = self.members.get(self._flag_source_name)
            self._flag_contrib = source._flag_contrib if source else {}
            self._feature_names = getattr(source, "_feature_names", [])
        elif self.flag_heads:
            self._flag_contrib = self._load_flag_contributions()
        else:
            self._flag_contrib = {}
        self._flag_decisions = {
            f: (FLAG_PREFIX + f, head.labels.index("yes"), head.decision.get("flag_threshold", 1.01))
            for f, head in self.flag_heads.items()}
        urgency = self.heads.get("urgency")
        self._urgency_rules = urgency is not None and set(urgency.labels) == set(URGENCY_ORDER)
        self._same_day_floor = self._member_same_day_floor() if self.tier == "ensemble" else None
        if self._same_day_floor and self._same_day_floor[0] not in self._active:
            self._active.append(self._same_day_floor[0])

    # -- loading -----------------------------------------------------------------
    def _init_ensemble(self, *, threads: int) -> None:
        """Load the member bundles; per head, which members count, by what weight, in which column order.

        Flag heads, their evidence and the sparse rows come from the member that has a
        featurizer (the linear one); the ensemble's own rules and calendar apply.
        """
        self.members: dict[str, Model] = {}
        for name, folder in self.manifest["members"].items():
            member = Model(self.path / folder, verify=False, max_chars=self.max_chars, calendar=self.calendar,
                           threads=threads)  # the ensemble's file list, verified above, covers the members' files
            if member.tier == "ensemble":
                raise BundleError(f"ensemble member {name!r} is itself an ensemble")
            self.members[name] = member
        self.heads = {name: _Head(name, spec, len(spec["labels"])) for name, spec in self.manifest["heads"].items()}
        self._mix: dict[str, list[tuple[str, float, np.ndarray]]] = {}
        for name, head in self.heads.items():
            parts = []
            for member_name, weight in self.manifest["heads"][name]["weights"].items():
                member_head = self.members[member_name].heads.get(name)
                if member_head is None or sorted(member_head.labels) != sorted(head.labels):
                    raise BundleError(f"ensemble head {name!r}: member {member_name!r} does not predict its labels")
                if weight > 0:
                    parts.append((member_name, float(weight),
                                  np.array([member_head.labels.index(lb) for lb in head.labels])))
            self._mix[name] = parts
        self._temperatures = {name: float(spec.get("temperature", 1.0)) for name, spec in self.manifest["heads"].items()}
        self._flag_source_name = next((n for n, m in self.members.items() if m.featurizer is not None), None)
        source = self.members.get(self._flag_source_name)
        self.featurizer = source.featurizer if source else None
        self.flag_heads = source.flag_heads if source else {}
        used = {m for parts in self._mix.values() for m, _, _ in parts}
        self._active = [name for name in self.members
                        if name in used or (name == self._flag_source_name and self.flag_heads)]

    def _member_same_day_floor(self) -> tuple[str, float] | None:
        """The member whose own same_day decision the ensemble keeps as a floor, and its threshold.

        An ensemble's same_day threshold is fitted on a dev split of a few hundred rows; the
        linear member's was fitted on out-of-fold predictions of its whole training set at the
        recall confidence it was trained for. Keeping the member's decision means combining
        tiers can only raise urgency, as rules do.
        """
        name = self.heads["urgency"].decision.get("member_floor") if self._urgency_rules else None
        if name is None:
            return None
        member = self.members.get(name)
        member_head = member.heads.get("urgency") if member else None
        if (member_head is None or "same_day_threshold" not in member_head.decision
                or sorted(member_head.labels) != sorted(self.heads["urgency"].labels)):
            raise BundleError(f"urgency member_floor {name!r} is not a member with the same urgency labels "
                              "and a same_day decision")
        return name, float(member_head.decision["same_day_threshold"])

    def _load_featurizer(self, renumber: bool = True) -> tuple[Featurizer, np.ndarray | None]:
        """The bundle's featurizer and, with ``renumber``, features renumbered most frequent first
        (``frequent_first``) with the renumbering the head tables must follow."""
        spec = self.manifest["features"]
        data = read_json_file(self.path, spec["vocabulary"])
        grams, idf = data.get("features"), data.get("idf")
        if not isinstance(grams, list) or not isinstance(idf, list) or len(grams) != len(idf):
            raise BundleError("features/vocabulary.json must hold equal-length 'features' and 'idf' lists")
        # bundles from before rule states have none; from before text views, view 1
        config = FeatureConfig(**{"rule_states": 0.0, "text_view": 1, **spec["config"]})
        tokenizer = None
        if config.words:
            userdict = spec.get("userdict")
            words = read_userdict(self.path / userdict) if userdict else []
            tokenizer = WordTokenizer(words)
        vocabulary, idf, order = {g: i for i, g in enumerate(grams)}, np.asarray(idf, dtype=np.float64), None
        if renumber:
            vocabulary, idf, order = frequent_first(vocabulary, idf)
        return Featurizer(config=config, vocabulary=vocabulary, idf=idf, tokenizer=tokenizer), order

    def _load_flag_contributions(self) -> dict[str, np.ndarray]:
        """Per flag head, each feature's weight towards 'yes' (for evidence of model flags)."""
        import onnx
        from onnx import numpy_helper

        out = {}
        for flag, head in self.flag_heads.items():
            spec = self.manifest["flag_heads"][flag]
            table = next(numpy_helper.to_array(t) for t in onnx.load(str(self.path / spec["onnx"])).graph.initializer
                         if t.name == "W")
            table = table[self._row_order]
            out[flag] = table[:, head.labels.index("yes")] - table[:, head.labels.index("no")]
        self._feature_names = [None] * self.featurizer.n_features
        for gram, idx in self.featurizer.vocabulary.items():
            self._feature_names[idx] = gram
        return out

    def _load_rules(self) -> RuleSet | None:
        rel = self.manifest.get("rules")
        return load_rules(self.path / rel) if rel else None

    def _session(self, specs: dict, threads: int):
        import onnxruntime as ort

        model = compose_heads({name: self.path / spec["onnx"] for name, spec in specs.items()}, self._row_order)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"cannot load the ONNX heads: {exc}") from exc

    # -- scoring -----------------------------------------------------------------
    @property
    def labels(self) -> dict[str, list[str]]:
        """Label list of every prediction head (flag heads excluded)."""
        return {name: head.labels for name, head in self.heads.items()}

    def score(self, ticket) -> TriageResult:
        """Score one ticket (a mapping with ``text``, a Ticket, or a string)."""
        return self.score_batch([ticket])[0]

    def score_batch(self, tickets: Iterable, *, errors: str = "raise") -> list:
        """Score many tickets in one pass through each head, keeping input order.

        With ``errors="return"`` a bad ticket yields its InvalidTicketError in place
        of a result instead of failing the whole batch.
        """
        if errors not in ("raise", "return"):
            raise ValueError("errors must be 'raise' or 'return'")
        prepared: list = []
        for obj in tickets:
            try:
                ticket = Ticket.from_obj(obj, self.calendar.timezone)
                text = validate_text(ticket.text, self.max_chars)
                prepared.append((ticket, text, normalize_text(text)))
            except InvalidTicketError as exc:
                if errors == "raise":
                    raise
                prepared.append(exc)
        good = [p for p in prepared if not isinstance(p, InvalidTicketError)]
        analyses = [self.rules.analyze(p[2], p[1]) for p in good] if self.rules else [([], frozenset())] * len(good)
        probs, rows = self._predict([p[2] for p in good], [a[1] for a in analyses]) if good else ({}, [])
        if len(good) == 1:  # a dozen short rows: Python sorts them faster than a numpy call each
            probs = {h: pr.tolist() for h, pr in probs.items()}
            ranked = {h: [sorted(range(len(probs[h][0])), key=probs[h][0].__getitem__, reverse=True)[:TOP_K]]
                      for h in self.heads}
        else:
            ranked = ({h: np.argsort(-probs[h], axis=1, kind="stable")[:, :TOP_K].tolist() for h in self.heads}
                      if good else {})
            probs = {h: pr.tolist() for h, pr in probs.items()}
        results, k = [], 0
        for p in prepared:
            if isinstance(p, InvalidTicketError):
                results.append(p)
                continue
            ticket, text, normalized = p
            results.append(self._build_result(ticket, text, normalized, {h: pr[k] for h, pr in probs.items()},
                                              {h: r[k] for h, r in ranked.items()}, rows[k], analyses[k][0]))
            k += 1
        return results

    def predict_proba(self, normalized_texts: list[str]) -> dict[str, np.ndarray]:
        """Calibrated class probabilities per head (flag heads excluded) for normalised texts."""
        probs, _ = self._predict(list(normalized_texts))
        return {name: probs[name] for name in self.heads}

    def _predict(self, normalized_texts: list[str], states: list | None = None) -> tuple[dict[str, np.ndarray], list]:
        """Probabilities of every head and flag head, and the sparse rows (linear tier only).

        ``states`` are the texts' rule states under this bundle's rules, when already known.
        """
        if self.tier == "transformer":
            return self.scorer.predict_proba(normalized_texts), [None] * len(normalized_texts)
        if self.tier == "ensemble":
            return self._predict_ensemble(normalized_texts)
        if self.featurizer.uses_rule_states and states is None:
            states = [self.rules.analyze(t)[1] for t in normalized_texts]
        indptr, indices, weights = self.featurizer.transform_rows(normalized_texts, states)
        rows = [(indices[a:b], weights[a:b]) for a, b in zip(indptr[:-1], indptr[1:])]
        return self._run(indptr, indices, weights), rows

    def _predict_ensemble(self, normalized_texts: list[str]) -> tuple[dict[str, np.ndarray], list]:
        """Each head: the weighted mean of its members' probabilities, then the head's temperature."""
        outputs, rows = {}, [None] * len(normalized_texts)
        for name in self._active:
            member = self.members[name]
            outputs[name], member_rows = member._predict(normalized_texts)
            if name == self._flag_source_name:
                rows = member_rows
        probs = {}
        for head, parts in self._mix.items():
            mixed = sum(weight * outputs[member][head][:, columns].astype(np.float64)
                        for member, weight, columns in parts)
            probs[head] = sharpen(mixed, self._temperatures[head]).astype(np.float32)
        for head in self.flag_heads.values():
            probs[head.name] = outputs[self._flag_source_name][head.name]
        if self._same_day_floor:
            name = self._same_day_floor[0]
            member_labels = self.members[name].heads["urgency"].labels
            columns = [member_labels.index(lb) for lb in self.heads["urgency"].labels]
            probs[MEMBER_URGENCY] = outputs[name]["urgency"][:, columns]
        return probs, rows

    def _run(self, indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
        """One ONNX call for the whole batch, rows padded to one width with the pad index."""
        n_rows = len(indptr) - 1
        if n_rows == 1 and len(indices):  # one ticket: its row is already the padded batch
            padded_indices, padded_weights = indices.astype(np.int64, copy=False)[None, :], weights[None, :]
        else:
            lengths = np.diff(indptr)
            width = max(1, int(lengths.max(initial=0)))
            rows = np.repeat(np.arange(n_rows), lengths)
            cols = np.arange(len(indices)) - indptr[rows]
            padded_indices = np.full((n_rows, width), self._pad_index, dtype=np.int64)
            padded_weights = np.zeros((n_rows, width), dtype=np.float32)
            padded_indices[rows, cols] = indices
            padded_weights[rows, cols] = weights
        outputs = self.session.run(self._outputs, {"indices": padded_indices, "weights": padded_weights})
        return dict(zip(self._outputs, outputs))

    def _build_result(self, ticket: Ticket, text: str, normalized: str, probs: dict, ranked: dict,
                      row, hits: list) -> TriageResult:
        """One ticket's result from its probabilities (lists per head) and top-k class indices."""
        heads: dict[str, HeadPrediction] = {}
        review_reasons: list[str] = []
        for name, head in self.heads.items():
            p, order = probs[name], ranked[name]
            best = order[0]
            threshold = float(head.thresholds[best])
            pred = HeadPrediction(label=head.labels[best], confidence=p[best],
                                  top=[(head.labels[j], p[j]) for j in order],
                                  threshold=threshold, needs_review=p[best] < threshold)
            heads[name] = pred
        escalation: dict[str, list[dict]] = {}
        for hit in hits:
            if hit.kind == "flag":
                escalation.setdefault(hit.flag, []).append(
                    {"source": "rule", "rule_id": hit.rule_id, **hit.evidence.to_dict()})
        model_flags = self._model_flags(probs, row, normalized, text, escalation)
        escalation.update(model_flags)
        urgency_reasons: list[dict] = []
        if "urgency" in heads:
            urgency_reasons = self._decide_urgency(heads["urgency"], probs["urgency"], hits, model_flags,
                                                   probs.get(MEMBER_URGENCY))
        for name, pred in heads.items():
            if pred.needs_review:
                raised = name == "urgency" and any(r["source"] == "decision" for r in urgency_reasons)
                review_reasons.append("urgency_same_day_by_threshold" if raised else f"{name}_below_threshold")
        for flag in REVIEW_FLAGS:
            if flag in escalation:
                review_reasons.append(f"flag_{flag}")
        due_at = None
        if "urgency" in heads and heads["urgency"].label in URGENCY_ORDER:
            due_at = self.calendar.due_at(ticket.received_at, heads["urgency"].label)
        return TriageResult(id=ticket.id, heads=heads, urgency_reasons=urgency_reasons,
                            escalation=escalation, needs_review=bool(review_reasons),
                            review_reasons=review_reasons, received_at=ticket.received_at,
                            due_at=due_at, model_version=self.model_version)

    def _model_flags(self, probs: dict, row, normalized: str, text: str, found: dict) -> dict[str, list[dict]]:
        """Flags the flag heads add beyond the rules, with the features that pushed them as evidence."""
        out: dict[str, list[dict]] = {}
        for flag, (output, yes, threshold) in self._flag_decisions.items():
            if flag in found:
                continue
            p_yes = probs[output][yes]
            if p_yes < threshold:
                continue
            out[flag] = [{"source": "model", "probability": round(p_yes, 6), **span}
                         for span in self._evidence_spans(self._flag_contrib[flag], row, normalized, text)]
            if not out[flag]:
                out[flag] = [{"source": "model", "probability": round(p_yes, 6)}]
        return out

    def _evidence_spans(self, contrib: np.ndarray, row, normalized: str, text: str) -> list[dict]:
        """Where the strongest positive features of a head occur in the original text."""
        indices, weights = row
        if not len(indices):
            return []
        scores = weights * contrib[indices]
        folded = _DIGIT.sub("0", normalized.lower())
        if len(folded) != len(text):
            return []
        spans: list[dict] = []
        for j in np.argsort(-scores)[:EVIDENCE_FEATURES * 2]:
            if scores[j] <= 0 or len(spans) >= EVIDENCE_FEATURES:
                break
            gram = self._feature_names[indices[j]].lstrip(WORD_PREFIX)
            start = folded.find(gram)
            if start < 0 or len(gram.strip()) < 2 or any(s["start"] < start + len(gram) and start < s["end"]
                                                          for s in spans):
                continue
            spans.append({"text": text[start:start + len(gram)], "start": start, "end": start + len(gram)})
        return sorted(spans, key=lambda s: s["start"])

    def _decide_urgency(self, pred: HeadPrediction, p: np.ndarray, hits, model_flags: dict,
                        member_p: np.ndarray | None = None) -> list[dict]:
        """Apply the bundle's same_day decision threshold, an ensemble member's same_day decision, then the
        rule floor: each may only raise urgency.

        A same_day call that only the decision threshold made (the model's best class was another,
        no rule or flag agrees) stands, since missing a same_day ticket is the costlier error, but
        is marked for review: the threshold is set low for recall, and such calls are right far
        less often than the model's own same_day calls.
        """
        head = self.heads["urgency"]
        reasons = [{"source": "model", "label": pred.label, "probability": round(pred.confidence, 6)}]
        if not self._urgency_rules:
            return reasons
        sd_threshold = head.decision.get("same_day_threshold")
        if sd_threshold is not None:
            p_sd = float(p[head.labels.index("same_day")])
            if p_sd >= sd_threshold and pred.label != "same_day":
                pred.label, pred.confidence = "same_day", p_sd
                pred.needs_review = True
                reasons.append({"source": "decision", "label": "same_day", "probability": round(p_sd, 6),
                                "threshold": sd_threshold})
        if member_p is not None and pred.label != "same_day":
            sd = head.labels.index("same_day")
            member, member_threshold = self._same_day_floor
            if int(np.argmax(member_p)) == sd or float(member_p[sd]) >= member_threshold:
                pred.label, pred.confidence = "same_day", float(p[sd])
                pred.needs_review = False
                reasons.append({"source": "member", "member": member, "label": "same_day",
                                "probability": round(float(member_p[sd]), 6), "threshold": member_threshold})
        floor_hits = [h for h in hits if h.level]
        flag_levels = {f: self._flag_levels[f] for f in model_flags if f in self._flag_levels}
        floor = max_urgency(*(h.level for h in floor_hits), *flag_levels.values())
        final = max_urgency(pred.label, floor)
        for hit in floor_hits:
            if URGENCY_ORDER.index(hit.level) > URGENCY_ORDER.index(pred.label) or hit.level == final:
                reasons.append({"source": "rule", **hit.to_dict()})
        for flag, level in flag_levels.items():
            if URGENCY_ORDER.index(level) > URGENCY_ORDER.index(pred.label) or level == final:
                reasons.append({"source": "flag_model", "flag": flag, "level": level})
        if final != pred.label:
            pred.label = final
            pred.confidence = float(p[head.labels.index(final)])
            pred.needs_review = False
        elif final == "same_day" and floor == final and any(r["source"] == "decision" for r in reasons):
            pred.needs_review = False
        return reasons


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of ``probs`` raised to ``1 / temperature`` and renormalised (temperature 1: unchanged)."""
    if temperature == 1.0:
        return probs
    logp = np.log(np.maximum(probs, 1e-12)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def load(path: str | Path | None = None, **kwargs) -> Model:
    """Load a bundle directory (default: ``$TRIAGE_MODEL`` or ``models/default``)."""
    path = path or os.environ.get("TRIAGE_MODEL") or "models/default"
    return Model(path, **kwargs)
