"""Lexicon rules: urgency floors and escalation flags with evidence spans.

The rules are data (``resources/rules.json`` by default, copied into every bundle).
A pattern hit counts only when it is not excluded by a look-alike pattern, not negated
(没有停电), not resolved (已经修好了) and, for rules that ask for it, not hypothetical
(如果停电…). Evidence offsets index the original ticket text, because normalisation
keeps one character per input character.
"""

from __future__ import annotations

import json
import re

try:
    import re._parser as _sre_parser
except ImportError:  # Python < 3.11
    import sre_parse as _sre_parser  # noqa: F401
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from triage.errors import RulesError
from triage.normalize import spaced_out_gaps

URGENCY_ORDER = ("normal", "within_24h", "same_day")


@dataclass(frozen=True)
class Evidence:
    text: str
    start: int
    end: int

    def to_dict(self) -> dict:
        return {"text": self.text, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class RuleHit:
    rule_id: str
    kind: str
    flag: str | None
    level: str | None
    evidence: Evidence

    def to_dict(self) -> dict:
        out = {"rule_id": self.rule_id, "evidence": self.evidence.to_dict()}
        if self.level:
            out["level"] = self.level
        return out


@dataclass(frozen=True)
class _Part:
    """One pattern of a rule, run only on texts that contain one of its trigger literals."""

    pattern: re.Pattern
    triggers: tuple[str, ...] | None
    trigger_chars: frozenset[str] | None


@dataclass(frozen=True)
class _Rule:
    id: str
    kind: str
    flag: str | None
    level: str | None
    parts: tuple[_Part, ...]
    exclude: re.Pattern | None
    exclude_parts: tuple[re.Pattern, ...]
    hypothetical_blocks: bool
    holds_when_past: bool = False

    def excluded_spans(self, text: str) -> list[tuple[int, int]]:
        """Spans of every look-alike match. Each pattern is searched on its own: in one
        alternation a short look-alike (充电) would hide a longer one at the same place
        (充电中途断电). The alternation only answers, in one scan, whether there are any."""
        if self.exclude is None or not self.exclude.search(text):
            return []
        return [m.span() for p in self.exclude_parts for m in p.finditer(text)]


class RuleSet:
    """Compiled rules; ``match(text)`` returns the hits that survive the context checks."""

    def __init__(self, spec: dict):
        self.spec = spec
        try:
            self._clause_re = re.compile("[" + re.escape(spec["clause_delimiters"]) + "]")
            self._negation_window = int(spec.get("negation_window", 6))
            self._negators = _alternation(spec.get("negators", []))
            self._not_negations = _alternation(spec.get("negation_exceptions", []))
            self._exception_reach = max(map(len, spec.get("negation_exceptions", [])), default=0)
            self._breakers = set(spec.get("negation_breakers", ""))
            self._cue_negators = frozenset(spec.get("cue_negators", _CUE_NEGATORS))
            self._resolved = _alternation(spec.get("resolved_cues", []))
            self._not_resolved = _alternation(spec.get("resolved_exceptions", []))
            self._unresolved_before = _alternation(spec.get("unresolved_before", []))
            self._unresolved_after = _alternation(spec.get("unresolved_after", []))
            self._hypothetical = _alternation(spec.get("hypothetical_cues", []))
            self._past = _alternation(spec.get("past_cues", []))
            self._ongoing = _alternation(spec.get("ongoing_cues", []))
            self._present = _alternation(spec.get("present_cues", []))
            delimiters = spec.get("sentence_delimiters", "")
            self._sentence_re = re.compile(f"[{re.escape(delimiters)}]") if delimiters else None
            self._praise = _alternation(spec.get("praise_cues", []))
            self.rules = [self._compile(r) for r in spec["rules"]]
        except (KeyError, TypeError, ValueError, re.error) as exc:
            raise RulesError(f"invalid rules: {exc}") from exc
        ids = [r.id for r in self.rules]
        if len(set(ids)) != len(ids):
            raise RulesError("rule ids must be unique")
        self._parts = [(k, part) for k, rule in enumerate(self.rules) for part in rule.parts]
        self._always = [j for j, (_, part) in enumerate(self._parts) if part.triggers is None]
        self._automaton = _build_automaton([part for _, part in self._parts])

    @staticmethod
    def _compile(raw: dict) -> _Rule:
        kind = raw["kind"]
        if kind not in ("urgency", "flag"):
            raise ValueError(f"rule {raw.get('id')}: kind must be 'urgency' or 'flag'")
        level = raw.get("level")
        if level is not None and level not in URGENCY_ORDER:
            raise ValueError(f"rule {raw['id']}: unknown urgency level {level!r}")
        if kind == "urgency" and level is None:
            raise ValueError(f"rule {raw['id']}: urgency rules need a level")
        if kind == "flag" and not raw.get("flag"):
            raise ValueError(f"rule {raw['id']}: flag rules need a flag")
        exclude = raw.get("exclude") or []
        return _Rule(
            id=raw["id"], kind=kind, flag=raw.get("flag"), level=level,
            parts=tuple(_compile_part(p) for p in raw["patterns"]),
            exclude=re.compile("|".join(f"(?:{p})" for p in exclude), re.IGNORECASE) if exclude else None,
            exclude_parts=tuple(re.compile(p, re.IGNORECASE) for p in exclude),
            hypothetical_blocks=bool(raw.get("hypothetical_blocks", False)),
            holds_when_past=bool(raw.get("holds_when_past", False)),
        )

    @property
    def flags(self) -> list[str]:
        return sorted({r.flag for r in self.rules if r.flag})

    def _clauses(self, text: str) -> list[tuple[int, int]]:
        bounds, start = [], 0
        for m in self._clause_re.finditer(text):
            bounds.append((start, m.start()))
            start = m.end()
        bounds.append((start, len(text)))
        return bounds

    def _negated(self, text: str, clause_start: int, hit_start: int) -> bool:
        window_start = max(clause_start, hit_start - self._negation_window)
        before = text[window_start:hit_start]
        for m in self._negators.finditer(before) if self._negators else ():
            if self._not_negation(text, window_start + m.start(), window_start + m.end()):
                continue
            between = before[m.end():]
            if not self._breakers.intersection(between):
                return True
        return False

    def _not_negation(self, text: str, start: int, end: int) -> bool:
        """A negator inside a fixed phrase that negates nothing here (是不是…, 没人管)."""
        if self._not_negations is None:
            return False
        reach = self._exception_reach
        return any(x.start() <= start and end <= x.end()
                   for x in self._not_negations.finditer(text, max(0, start - reach), end + reach))

    def _candidates(self, text: str) -> list[tuple[_Rule, list[tuple[int, int]]]]:
        """Rules with a match in ``text``, each with its matches' spans in text order.

        Every match of a pattern contains one of its trigger literals, so a pattern
        runs only on texts where the trigger automaton saw one. A rule's patterns act as
        one alternation: at each position the first listed pattern wins, and matches do
        not overlap.
        """
        found = set(self._always)
        if self._automaton is not None:
            for _, part_ids in self._automaton.iter(text.lower()):
                found.update(part_ids)
        else:
            chars = set(text.lower())
            found.update(j for j, (_, part) in enumerate(self._parts)
                         if part.trigger_chars is not None and not part.trigger_chars.isdisjoint(chars))
        matches: dict[int, list[tuple[int, int, int]]] = {}
        for j in sorted(found):
            k, part = self._parts[j]
            spans = [(m.start(), j, m.end()) for m in part.pattern.finditer(text) if m.end() > m.start()]
            if spans:
                matches.setdefault(k, []).extend(spans)
        out = []
        for k in sorted(matches):
            spans, last = [], -1
            for start, _, end in sorted(set(matches[k])):
                if start >= last:
                    spans.append((start, end))
                    last = end
            out.append((self.rules[k], spans))
        return out

    def _resolved_somewhere(self, text: str, clauses: list[tuple[int, int]]) -> bool:
        """Whether a resolution cue says the problem is over.

        A cue does not count when it is negated (没有电了 holds 有电了 but says the opposite),
        overlaps a phrase that resolves nothing (客户来电后: the customer called), follows a
        demand, wish, question or promise in its clause (要求尽快恢复供水, 什么时候恢复,
        物业说马上恢复), or is followed in its clause or the next by a question or a
        contradiction (修好了吗, 说已处理好，可还是有味道).
        """
        if not self._resolved:
            return False
        spans = [x.span() for x in self._not_resolved.finditer(text)] if self._not_resolved else []
        for m in self._resolved.finditer(text):
            if m.start() and text[m.start() - 1] in self._cue_negators:
                continue
            if any(s < m.end() and m.start() < e for s, e in spans):
                continue
            k = _clause_index(clauses, m.start())
            if self._unresolved_before and self._unresolved_before.search(text, clauses[k][0], m.start()):
                continue
            after_end = clauses[min(k + 1, len(clauses) - 1)][1]
            if self._unresolved_after and self._unresolved_after.search(text, m.end(), after_end):
                continue
            return True
        return False

    def _hypothetical_clause(self, text: str, clause_start: int, start: int) -> bool:
        return bool(self._hypothetical and self._hypothetical.search(text, clause_start, start))

    def _not_current(self, text: str, clauses, k: int, start: int, end: int, praise: bool) -> bool:
        """An urgency hit that describes no danger now: praise, resolved, or a finished past event.

        A past cue counts in the hit's clause before it, or (with ``sentence_delimiters``)
        anywhere earlier in its sentence (上周六晚上，我在网点存钱，隔壁突然窜起火苗), unless
        the sentence also says it goes on (从昨晚开始…, 现在还…): a narrative keeps its
        time frame until the sentence ends.
        """
        if praise:
            return True
        c_start, c_end = clauses[k]
        ongoing = bool(self._ongoing and self._ongoing.search(text, c_start, c_end))
        if not ongoing and self._resolved_somewhere(text, clauses):
            return True
        if ongoing or not self._past:
            return False
        if self._past.search(text, c_start, start):
            return True
        if self._sentence_re is None:
            return False
        s_start = max((m.end() for m in self._sentence_re.finditer(text, 0, start)), default=0)
        m = self._sentence_re.search(text, end)
        s_end = m.start() if m else len(text)
        if any(cues and cues.search(text, s_start, s_end) for cues in (self._ongoing, self._present)):
            return False
        return bool(self._past.search(text, s_start, c_start))

    def match(self, text: str, original: str | None = None) -> list[RuleHit]:
        """Hits in ``text`` (normalised); evidence strings are cut from ``original``."""
        return self.analyze(text, original)[0]

    def analyze(self, text: str, original: str | None = None) -> tuple[list[RuleHit], frozenset[str]]:
        """The hits of ``match`` and the states of every urgency pattern match (see ``_analyze``).

        A spaced-out text (停 水 了, 小区 停水 两天 了) is matched with its gaps closed, as the
        models see it, and the evidence offsets are mapped back to the text as given.
        """
        original = original if original is not None else text
        gaps = spaced_out_gaps(text)
        if not gaps:
            return self._analyze(text, original)
        dropped = {i for start, end in gaps for i in range(start, end)}
        kept = [i for i in range(len(text)) if i not in dropped]
        joined = "".join(text[i] for i in kept)
        hits, states = self._analyze(joined)
        out = []
        for hit in hits:
            start, end = kept[hit.evidence.start], kept[hit.evidence.end - 1] + 1
            out.append(RuleHit(hit.rule_id, hit.kind, hit.flag, hit.level, Evidence(original[start:end], start, end)))
        return out, states

    def _analyze(self, text: str, original: str | None = None) -> tuple[list[RuleHit], frozenset[str]]:
        """The hits of ``match`` and the states of every urgency pattern match.

        A state names the rule and what became of its match: ``on`` (a hit), ``neg``
        (negated), ``hyp`` (hypothetical), ``past`` (resolved, finished or praise) or
        ``excl`` (a look-alike), both as ``<rule_id>:<state>`` and ``<level>:<state>``.
        Linear heads can take them as features (``FeatureConfig.rule_states``): that a
        hazard word occurs but was negated or is over is what character n-grams miss.
        """
        original = original if original is not None else text
        clauses = None
        praise = None
        hits: list[RuleHit] = []
        states: set[str] = set()
        for rule, spans in self._candidates(text):
            excluded = rule.excluded_spans(text)
            for start, end in spans:
                if any(s < end and start < e for s, e in excluded):
                    state = "excl"
                else:
                    if clauses is None:
                        clauses = self._clauses(text)
                        praise = bool(self._praise and self._praise.search(text))
                    k = _clause_index(clauses, start)
                    if self._negated(text, clauses[k][0], start):
                        state = "neg"
                    elif rule.hypothetical_blocks and self._hypothetical_clause(text, clauses[k][0], start):
                        state = "hyp"
                    elif (rule.kind == "urgency" and not rule.holds_when_past
                          and self._not_current(text, clauses, k, start, end, praise)):
                        state = "past"
                    else:
                        state = "on"
                if rule.kind == "urgency":
                    states.add(f"{rule.id}:{state}")
                    states.add(f"{rule.level}:{state}")
                if state != "on":
                    continue
                level = None if (praise and rule.kind == "flag" and not rule.holds_when_past) else rule.level
                hits.append(RuleHit(rule.id, rule.kind, rule.flag, level,
                                    Evidence(original[start:end], start, end)))
        return hits, frozenset(states)


def _compile_part(pattern: str) -> _Part:
    triggers = _rule_triggers([pattern])
    return _Part(pattern=re.compile(pattern, re.IGNORECASE), triggers=triggers,
                 trigger_chars=frozenset(_rarest_char(t) for t in triggers) if triggers else None)


def _build_automaton(parts: list[_Part]):
    """An Aho-Corasick automaton from trigger literal to pattern indices (None without pyahocorasick)."""
    try:
        import ahocorasick
    except ImportError:
        return None
    table: dict[str, set[int]] = {}
    for j, part in enumerate(parts):
        for trigger in part.triggers or ():
            table.setdefault(trigger, set()).add(j)
    if not table:  # an automaton without words cannot be searched
        return None
    automaton = ahocorasick.Automaton()
    for trigger, part_ids in table.items():
        automaton.add_word(trigger, frozenset(part_ids))
    automaton.make_automaton()
    return automaton


def _rule_triggers(patterns: list[str]) -> tuple[str, ...] | None:
    """Literal strings one of which every match of the rule must contain, or None.

    Derived from the parsed patterns, so a rule whose trigger is absent from a text is
    skipped without running its regular expression; a pattern with no mandatory
    literal makes the rule run on every text.
    """
    triggers: set[str] = set()
    for pattern in patterns:
        found = _required(_sre_parser.parse(pattern, re.IGNORECASE))
        if not found:
            return None
        triggers.update(t.lower() for t in found)
    return tuple(sorted(triggers))


def _required(seq) -> list[str] | None:
    """Alternatives (any one must occur in a match) for a parsed sequence, best first."""
    best: list[str] | None = None
    run: list[str] = []

    def consider(candidate: list[str] | None) -> None:
        nonlocal best
        if candidate and (best is None or _selectivity(candidate) > _selectivity(best)):
            best = candidate

    for op, av in seq:
        name = str(op)
        if name == "LITERAL":
            run.append(chr(av))
            continue
        if run:
            consider(["".join(run)])
            run = []
        if name == "SUBPATTERN":
            consider(_required(av[-1]))
        elif name in ("MAX_REPEAT", "MIN_REPEAT") and av[0] >= 1:
            consider(_required(av[2]))
        elif name == "BRANCH":
            alternatives = [_required(branch) for branch in av[1]]
            if all(alternatives):
                consider(sorted({t for alt in alternatives for t in alt}))
        elif name == "IN" and all(str(o) == "LITERAL" for o, _ in av) and len(av) <= 12:
            consider([chr(v) for _, v in av])
    if run:
        consider(["".join(run)])
    return best


# Characters so frequent in complaints that they make poor triggers.
_COMMON_CHARS = frozenset("的了是不一有人在我这个们中来上大为和到说就要出会可也你对没无电水")


def _rarest_char(trigger: str) -> str:
    """One character of ``trigger`` (any will do for correctness; a rare one skips more rules)."""
    for ch in trigger:
        if ch not in _COMMON_CHARS:
            return ch
    return trigger[0]


def _selectivity(candidate: list[str]) -> float:
    return min(len(t) for t in candidate) - 0.05 * len(candidate)


_CUE_NEGATORS = "没沒冇未"  # rules files from before ``cue_negators`` was data


def _alternation(words: list[str]) -> re.Pattern | None:
    if not words:
        return None
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))


def _clause_index(clauses: list[tuple[int, int]], pos: int) -> int:
    for k, (s, e) in enumerate(clauses):
        if s <= pos <= e:
            return k
    return len(clauses) - 1


def _clause_text(text: str, clauses: list[tuple[int, int]], k: int) -> str:
    if k >= len(clauses):
        return ""
    s, e = clauses[k]
    return text[s:e]


def max_urgency(*levels: str | None) -> str:
    """The most urgent of the given levels (``normal`` when none is given)."""
    ranked = [URGENCY_ORDER.index(lv) for lv in levels if lv in URGENCY_ORDER]
    return URGENCY_ORDER[max(ranked)] if ranked else "normal"


def load_rules(path: str | Path | None = None) -> RuleSet:
    """The default rules, or a deployment's own rules file."""
    try:
        if path is None:
            text = resources.files("triage.resources").joinpath("rules.json").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        spec = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise RulesError(f"cannot read rules {path or 'rules.json'}: {exc}") from exc
    return RuleSet(spec)
