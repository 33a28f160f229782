"""The inference object: load a bundle, score tickets. Nothing here trains."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from triage.bundle import read_json_file, read_manifest, verify_files
from triage.calendar import BusinessCalendar
from triage.errors import BundleError, InvalidTicketError
from triage.features import FeatureConfig, Featurizer
from triage.normalize import DEFAULT_MAX_CHARS, normalize_text, validate_text
from triage.rules import URGENCY_ORDER, RuleSet, load_rules, max_urgency
from triage.tokenize import WordTokenizer, read_userdict

TOP_K = 3
REVIEW_FLAGS = ("self_harm_threat", "injury")


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


def compose_heads(paths: dict[str, Path]):
    """One ONNX model that runs every head's graph on the shared sparse input.

    Each head stays its own file in the bundle; composing them at load time means one
    onnxruntime call per batch instead of one per head. Outputs are named after heads.
    """
    import onnx
    from onnx import helper

    nodes, inits, outputs, opsets = [], [], [], {}
    inputs = None
    for head, path in paths.items():
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError and friends
            raise BundleError(f"cannot read ONNX head {path.name}: {exc}") from exc
        graph = model.graph
        shared = {i.name for i in graph.input}
        if shared != {"indices", "weights"} or len(graph.output) != 1:
            raise BundleError(f"ONNX head {path.name} must take 'indices' and 'weights' and give one output")
        inputs = inputs or list(graph.input)

        def rename(name, head=head, shared=shared, out=graph.output[0].name):
            if not name or name in shared:
                return name
            return head if name == out else f"{head}/{name}"

        for init in graph.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = rename(init.name)
            inits.append(copy)
        for node in graph.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = rename(node.name or f"{node.op_type}_{len(nodes)}")
            copy.input[:] = [rename(x) for x in node.input]
            copy.output[:] = [rename(x) for x in node.output]
            nodes.append(copy)
        out = onnx.ValueInfoProto()
        out.CopyFrom(graph.output[0])
        out.name = head
        outputs.append(out)
        for opset in model.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    graph = helper.make_graph(nodes, "triage_heads", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name="triage")
    model.ir_version = 8
    return model


class Model:
    """A loaded bundle. ``score`` and ``score_batch`` are safe to call from many threads."""

    def __init__(self, path: str | Path, *, verify: bool = True, max_chars: int | None = None,
                 calendar: BusinessCalendar | None = None, threads: int = 1):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if verify:
            verify_files(self.path, self.manifest)
        self.model_version: str = self.manifest["model_version"]
        self.max_chars = max_chars or self.manifest.get("limits", {}).get("max_chars", DEFAULT_MAX_CHARS)
        self.calendar = calendar or BusinessCalendar.from_dict(self.manifest.get("calendar"))
        self.featurizer = self._load_featurizer()
        self.rules: RuleSet | None = self._load_rules()
        self.session = self._session(threads)
        n_out = {o.name: o.shape[-1] for o in self.session.get_outputs()}
        self.heads = {name: _Head(name, spec, n_out[name]) for name, spec in self.manifest["heads"].items()}
        self._pad_index = self.featurizer.n_features
        urgency = self.heads.get("urgency")
        self._urgency_rules = urgency is not None and set(urgency.labels) == set(URGENCY_ORDER)

    # -- loading -----------------------------------------------------------------
    def _load_featurizer(self) -> Featurizer:
        spec = self.manifest["features"]
        data = read_json_file(self.path, spec["vocabulary"])
        grams, idf = data.get("features"), data.get("idf")
        if not isinstance(grams, list) or not isinstance(idf, list) or len(grams) != len(idf):
            raise BundleError("features/vocabulary.json must hold equal-length 'features' and 'idf' lists")
        config = FeatureConfig(**spec["config"])
        tokenizer = None
        if config.words:
            userdict = spec.get("userdict")
            words = read_userdict(self.path / userdict) if userdict else []
            tokenizer = WordTokenizer(words)
        return Featurizer(config=config, vocabulary={g: i for i, g in enumerate(grams)},
                          idf=np.asarray(idf, dtype=np.float64), tokenizer=tokenizer)

    def _load_rules(self) -> RuleSet | None:
        rel = self.manifest.get("rules")
        return load_rules(self.path / rel) if rel else None

    def _session(self, threads: int):
        import onnxruntime as ort

        model = compose_heads({name: self.path / spec["onnx"] for name, spec in self.manifest["heads"].items()})
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
        probs = self.predict_proba([p[2] for p in good]) if good else {}
        results, k = [], 0
        for p in prepared:
            if isinstance(p, InvalidTicketError):
                results.append(p)
                continue
            ticket, text, normalized = p
            results.append(self._build_result(ticket, text, normalized, {h: pr[k] for h, pr in probs.items()}))
            k += 1
        return results

    def predict_proba(self, normalized_texts: list[str]) -> dict[str, np.ndarray]:
        """Calibrated class probabilities per head for normalised texts."""
        rows = [self.featurizer.transform_one(t) for t in normalized_texts]
        width = max(1, max(len(r[0]) for r in rows))
        indices = np.full((len(rows), width), self._pad_index, dtype=np.int64)
        weights = np.zeros((len(rows), width), dtype=np.float32)
        for i, (idx, w) in enumerate(rows):
            indices[i, :len(idx)] = idx
            weights[i, :len(w)] = w
        outputs = self.session.run(list(self.heads), {"indices": indices, "weights": weights})
        return dict(zip(self.heads, outputs))

    def _build_result(self, ticket: Ticket, text: str, normalized: str, probs: dict) -> TriageResult:
        heads: dict[str, HeadPrediction] = {}
        review_reasons: list[str] = []
        for name, head in self.heads.items():
            p = probs[name]
            best = int(np.argmax(p))
            order = np.argsort(-p)[:TOP_K]
            threshold = float(head.thresholds[best])
            pred = HeadPrediction(label=head.labels[best], confidence=float(p[best]),
                                  top=[(head.labels[j], float(p[j])) for j in order],
                                  threshold=threshold, needs_review=float(p[best]) < threshold)
            heads[name] = pred
        hits = self.rules.match(normalized, text) if self.rules else []
        escalation: dict[str, list[dict]] = {}
        for hit in hits:
            if hit.kind == "flag":
                escalation.setdefault(hit.flag, []).append(
                    {"rule_id": hit.rule_id, **hit.evidence.to_dict()})
        urgency_reasons: list[dict] = []
        if "urgency" in heads:
            urgency_reasons = self._decide_urgency(heads["urgency"], probs["urgency"], hits)
        for name, pred in heads.items():
            if pred.needs_review:
                review_reasons.append(f"{name}_below_threshold")
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

    def _decide_urgency(self, pred: HeadPrediction, p: np.ndarray, hits) -> list[dict]:
        """Apply the bundle's same_day decision threshold, then the rule floor (raise only)."""
        head = self.heads["urgency"]
        reasons = [{"source": "model", "label": pred.label, "probability": round(pred.confidence, 6)}]
        if not self._urgency_rules:
            return reasons
        sd_threshold = head.decision.get("same_day_threshold")
        if sd_threshold is not None:
            p_sd = float(p[head.labels.index("same_day")])
            if p_sd >= sd_threshold and pred.label != "same_day":
                pred.label, pred.confidence = "same_day", p_sd
                pred.needs_review = False
                reasons.append({"source": "decision", "label": "same_day", "probability": round(p_sd, 6),
                                "threshold": sd_threshold})
        floor_hits = [h for h in hits if h.level]
        floor = max_urgency(*(h.level for h in floor_hits))
        final = max_urgency(pred.label, floor)
        for hit in floor_hits:
            if URGENCY_ORDER.index(hit.level) > URGENCY_ORDER.index(pred.label) or hit.level == final:
                reasons.append({"source": "rule", **hit.to_dict()})
        if final != pred.label:
            pred.label = final
            pred.confidence = float(p[head.labels.index(final)])
            pred.needs_review = False
        return reasons


def load(path: str | Path | None = None, **kwargs) -> Model:
    """Load a bundle directory (default: ``$TRIAGE_MODEL`` or ``models/default``)."""
    path = path or os.environ.get("TRIAGE_MODEL") or "models/default"
    return Model(path, **kwargs)
