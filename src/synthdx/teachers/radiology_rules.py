"""A rule-based "noisy teacher" for chest X-ray reports: phrase matching + medspaCy ConText.

Mentions of each finding are matched with token patterns from the shipped phrase file
(`synthdx/resources/radiology_phrases.yaml`, adapted from the CheXpert labeler's mention lists,
Stanford ML Group, MIT licence), then ConText decides whether each mention is negated, uncertain or
present (historical mentions count as present: "stable cardiomegaly", "old rib fracture").

A report gets a label when a mention of it is present; a label whose mentions are all hedged is
`uncertain`, and the `uncertain` policy decides what happens to it. "No Finding" is set when nothing
abnormal is mentioned as present: none of the 13 findings and none of the other abnormalities that the
Open-i indexers code (scoliosis, degenerative changes, hyperinflation, scarring, calcification, ...).

    teacher = RadiologyRuleLabeler(uncertain="ignore").fit()
    teacher.predict(["Mild cardiomegaly. No pleural effusion."])  # [["Cardiomegaly"]]
"""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..records import Record
from ..tasks.radiology import RADIOLOGY_LABELS

PHRASES_PATH = Path(__file__).resolve().parents[1] / "resources" / "radiology_phrases.yaml"
POLICIES = ("positive", "negative", "ignore")
NO_FINDING = "No Finding"
OTHER = "OTHER_ABNORMAL"
IGNORE = "IGNORE"
# words that may not sit inside a `~N` gap (a negated phrase must not match as a finding)
_GAP_STOP = ["no", "not", "n't", "without", "normal", "negative", "nor", "free", "clear", "resolved",
             "removed", "unremarkable"]
_SENT_END_RE = re.compile(r"[.!?]+")

_BUILD_LOCK = threading.RLock()


@dataclass(frozen=True)
class Mention:
    label: str
    phrase: str
    status: str  # "positive" | "negated" | "uncertain"
    start: int  # character offsets in the text
    end: int
    rule: str = ""  # the phrase-file entry that matched
    cues: tuple[str, ...] = ()  # the ConText cues that decided the status

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "phrase": self.phrase, "status": self.status,
                "start": self.start, "end": self.end, "rule": self.rule,
                "cues": list(self.cues)}


def load_phrases(path: str | Path | None = None) -> dict[str, Any]:
    """The phrase file as a dict (labels, other_abnormal, ignore, context_rules)."""
    import yaml

    with open(path or PHRASES_PATH, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    unknown = set(data.get("labels", {})) - set(RADIOLOGY_LABELS.names)
    if unknown:
        raise ValueError(f"phrase file names labels outside the label space: {sorted(unknown)}")
    return data


def _alt_token(chunk: str) -> dict[str, Any]:
    alts = [a for a in chunk.split("|") if a]
    if all(not a.endswith("*") for a in alts):
        return {"LOWER": alts[0]} if len(alts) == 1 else {"LOWER": {"IN": alts}}
    parts = [re.escape(a[:-1]) + r".*" if a.endswith("*") else re.escape(a) for a in alts]
    return {"LOWER": {"REGEX": r"^(?:" + "|".join(parts) + r")$"}}


def compile_phrase(phrase: str, tokenizer) -> list[dict[str, Any]]:
    """A spaCy Matcher pattern from the phrase mini-syntax (see the phrase file's header)."""
    pattern: list[dict[str, Any]] = []
    for chunk in phrase.lower().split():
        optional = len(chunk) > 1 and chunk.endswith("?")
        if optional:
            chunk = chunk[:-1]
        if re.fullmatch(r"~\d+", chunk):
            n = int(chunk[1:])
            pattern.append({"IS_PUNCT": False, "LOWER": {"NOT_IN": _GAP_STOP}, "OP": f"{{0,{n}}}"})
            continue
        if "|" in chunk or chunk.endswith("*") or optional:
            for alt in chunk.split("|"):
                if alt and len(tokenizer(alt.rstrip("*"))) != 1:
                    raise ValueError(f"phrase {phrase!r}: alternative {alt!r} is not one token; "
                                     "write it as a separate phrase")
            tok = _alt_token(chunk)
            if optional:
                tok["OP"] = "?"
            pattern.append(tok)
            continue
        for t in tokenizer(chunk):
            pattern.append({"LOWER": t.lower_})
    if not pattern:
        raise ValueError(f"empty phrase {phrase!r}")
    return pattern


def expand_phrase(phrase: str, tokenizer, max_variants: int = 64) -> list[list[str]] | None:
    """The token sequences a phrase stands for when it has no prefix (`*`) or gap (`~N`) and at most
    `max_variants` of them (so it can go to spaCy's fast PhraseMatcher); None otherwise."""
    variants: list[list[str]] = [[]]
    for chunk in phrase.lower().split():
        optional = len(chunk) > 1 and chunk.endswith("?")
        if optional:
            chunk = chunk[:-1]
        if re.fullmatch(r"~\d+", chunk) or "*" in chunk:
            return None
        alts = [a for a in chunk.split("|") if a] if "|" in chunk else [chunk]
        options = [[t.lower_ for t in tokenizer(a)] for a in alts] + ([[]] if optional else [])
        variants = [v + o for v in variants for o in options]
        if len(variants) > max_variants:
            return None
    variants = [v for v in variants if v]
    return variants or None


def _rules_for(phrase: str, category: str, tokenizer, rule_cls, **kwargs) -> list:
    """medspaCy rules for one phrase: literal rules (PhraseMatcher) where the phrase expands to a few
    token sequences, else one token-pattern rule (Matcher)."""
    meta = {"phrase": phrase}
    expanded = expand_phrase(phrase, tokenizer)
    if expanded is not None:
        return [rule_cls(literal=" ".join(v), category=category, metadata=meta, **kwargs) for v in expanded]
    return [rule_cls(literal=phrase, category=category, pattern=compile_phrase(phrase, tokenizer),
                     metadata=meta, **kwargs)]


def _rad_sentences(doc):
    """Sentence starts after . ! ? and after line breaks (report sections)."""
    for i, tok in enumerate(doc):
        if i == 0:
            tok.is_sent_start = True
            continue
        prev = doc[i - 1]
        tok.is_sent_start = bool(
            _SENT_END_RE.fullmatch(prev.text) is not None  # ". " ".." "?"
            or prev.is_space or "\n" in prev.whitespace_  # line breaks
            or (prev.text == ":" and i >= 2 and doc[i - 2].text.isupper())  # "FINDINGS:"
        )
    return doc


def _default_context_rules_path() -> Path:
    """medspaCy's own English ConText rules (shipped in the medspacy wheel's `resources/`)."""
    import medspacy

    path = Path(medspacy.__file__).resolve().parents[1] / "resources" / "en" / "context_rules.json"
    if not path.exists():
        raise FileNotFoundError(f"medspaCy's default ConText rules are missing: {path}")
    return path


def build_pipeline(phrases: dict[str, Any] | None = None):
    """A blank English spaCy pipeline with a rule sentencizer, medspaCy's TargetMatcher and ConText."""
    import spacy
    from spacy.language import Language
    from medspacy.context import ConText, ConTextRule  # noqa: F401  (registers the factory)
    from medspacy.ner import TargetRule
    from medspacy.target_matcher import TargetMatcher  # noqa: F401

    phrases = phrases or load_phrases()
    if "synthdx_rad_sentences" not in Language.factories:
        Language.component("synthdx_rad_sentences", func=_rad_sentences)
    from medspacy.custom_tokenizer import create_medspacy_tokenizer

    nlp = spacy.blank("en")
    nlp.tokenizer = create_medspacy_tokenizer(nlp)  # splits "opacity/atelectasis", "XXXX-granuloma"
    nlp.add_pipe("synthdx_rad_sentences")
    matcher = nlp.add_pipe("medspacy_target_matcher")
    tok = nlp.tokenizer

    rules = []
    groups = [(label, plist) for label, plist in phrases.get("labels", {}).items()]
    groups += [(OTHER, phrases.get("other_abnormal", [])), (IGNORE, phrases.get("ignore", []))]
    for category, plist in groups:
        for p in plist or []:
            rules += _rules_for(p, category, tok, TargetRule)

    context = nlp.add_pipe("medspacy_context", config={"rules": None})
    drop = {d.lower() for d in phrases.get("drop_default_context_rules", []) or []}
    extra = [r for r in ConTextRule.from_json(str(_default_context_rules_path()))
             if r.literal.lower() not in drop]
    for r in phrases.get("context_rules", []) or []:
        extra += _rules_for(r["phrase"], r["category"], tok, ConTextRule, direction=r["direction"],
                            max_scope=r.get("max_scope"))
    # literal rules are tokenised by running `nlp` on them: only the tokenizer should run then
    with nlp.select_pipes(enable=[]):
        matcher.add(rules)
        context.add(extra)
    return nlp


class RadiologyRuleLabeler:
    """Rule-based labeler of chest X-ray reports over `RADIOLOGY_LABELS` (scikit-learn style).

    uncertain: what a hedged-only label ("cannot exclude pneumonia") becomes: "positive" (a label),
    "negative" (dropped) or "ignore" (neither: listed in `uncertain` / `meta["masked_labels"]` so that
    training can mask it).
    """

    def __init__(self, uncertain: str = "positive", batch_size: int = 64):
        self.uncertain = uncertain
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"RadiologyRuleLabeler(uncertain={self.uncertain!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_nlp", None)  # rebuilt on first use after unpickling
        return state

    # ---- scikit-learn style -------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"uncertain": self.uncertain, "batch_size": self.batch_size}

    def set_params(self, **params) -> "RadiologyRuleLabeler":
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"unknown parameter {k!r}")
            setattr(self, k, v)
        return self

    def fit(self, records: Iterable[Record] | None = None) -> "RadiologyRuleLabeler":
        """Nothing to learn: checks the policy and returns self (the pipeline is built on first use)."""
        self._check_policy()
        return self

    def _check_policy(self) -> None:
        if self.uncertain not in POLICIES:
            raise ValueError(f"uncertain must be one of {POLICIES}, got {self.uncertain!r}")

    @property
    def nlp_(self):
        """The spaCy pipeline, built on first use (a second or two)."""
        nlp = getattr(self, "_nlp", None)
        if nlp is None:
            with _BUILD_LOCK:
                nlp = getattr(self, "_nlp", None)
                if nlp is None:
                    nlp = self._nlp = build_pipeline()
        return nlp

    # ---- mentions -----------------------------------------------------------------------------
    @staticmethod
    def _status(ent, overlapping: list) -> tuple[str, tuple[str, ...]]:
        """Negated (any negation cue in scope wins: "no suspicious opacity"), else uncertain, else
        positive, with the deciding cues. A cue inside the mention itself ("no abnormal ...") counts."""
        neg, unc = [], []
        for mod in list(ent._.modifiers) + overlapping:
            cat = mod.category.upper()
            if cat == "NEGATED_EXISTENCE":
                neg.append(mod)
            elif cat in ("POSSIBLE_EXISTENCE", "HYPOTHETICAL"):
                unc.append(mod)
        doc = ent.doc
        if neg:
            return "negated", tuple(doc[m.modifier_span[0]:m.modifier_span[1]].text for m in neg)
        if unc:
            return "uncertain", tuple(doc[m.modifier_span[0]:m.modifier_span[1]].text for m in unc)
        return "positive", ()

    @staticmethod
    def _rule_phrase(ent) -> str:
        rule = getattr(ent._, "target_rule", None)
        meta = getattr(rule, "metadata", None) or {}
        return str(meta.get("phrase", getattr(rule, "literal", "")))

    def _mentions(self, doc) -> list[Mention]:
        graph = getattr(doc._, "context_graph", None)
        mods = [m for m in (graph.modifiers if graph is not None else [])
                if m.direction.upper() not in ("TERMINATE", "PSEUDO")]
        out = []
        for ent in doc.ents:
            if ent.label_ == IGNORE:
                continue
            inside = [m for m in mods if m.modifier_span[0] < ent.end and ent.start < m.modifier_span[1]]
            status, cues = self._status(ent, inside)
            out.append(Mention(ent.label_, ent.text, status, ent.start_char, ent.end_char,
                               self._rule_phrase(ent), cues))
        return out

    def _aggregate(self, mentions: list[Mention]) -> tuple[list[str], list[str]]:
        """(labels, uncertain labels) under the policy. A label is present when any mention of it is,
        hedged when its mentions are only uncertain; negated mentions say nothing."""
        present = {m.label for m in mentions if m.status == "positive"}
        hedged = {m.label for m in mentions if m.status == "uncertain"} - present
        findings = [n for n in RADIOLOGY_LABELS.names if n != NO_FINDING]
        pos = {n for n in findings if n in present}
        unc = {n for n in findings if n in hedged}
        abnormal_present = bool(pos) or OTHER in present
        abnormal_hedged = bool(unc) or OTHER in hedged
        if self.uncertain == "positive":
            pos |= unc
            unc = set()
            if not abnormal_present and not abnormal_hedged:
                pos.add(NO_FINDING)
        elif self.uncertain == "negative":
            unc = set()
            if not abnormal_present:
                pos.add(NO_FINDING)
        else:  # ignore
            if not abnormal_present:
                (unc if abnormal_hedged else pos).add(NO_FINDING)
        order = RADIOLOGY_LABELS.names
        return [n for n in order if n in pos], [n for n in order if n in unc]

    # ---- public API ---------------------------------------------------------------------------
    def predict_detailed(self, texts: list[str], with_mentions: bool = False) -> list[dict[str, Any]]:
        """Per text: `labels` (positive under the policy, label-space order), `uncertain` (labels that are
        neither positive nor negative: only under policy "ignore"; "No Finding" is among them when the
        only abnormalities are hedged), `hedged` (findings mentioned only with hedging, whatever the
        policy) and, with `with_mentions`, the `mentions` (label, phrase, status, offsets, the rule and
        ConText cues) for debugging. Nothing is logged."""
        self._check_policy()
        texts = ["" if t is None else str(t) for t in texts]
        out = []
        for doc in self.nlp_.pipe(texts, batch_size=self.batch_size):
            mentions = self._mentions(doc)
            labels, unc = self._aggregate(mentions)
            hedged = self._hedged(mentions)
            d: dict[str, Any] = {"labels": labels, "uncertain": unc, "hedged": hedged}
            if with_mentions:
                d["mentions"] = [m.to_dict() for m in mentions]
            out.append(d)
        return out

    def _hedged(self, mentions: list[Mention]) -> list[str]:
        pos = {m.label for m in mentions if m.status == "positive"}
        unc = {m.label for m in mentions if m.status == "uncertain"} - pos
        return [n for n in RADIOLOGY_LABELS.names if n in unc]

    def predict(self, texts: list[str]) -> list[list[str]]:
        """Positive labels per text, in label-space order."""
        return [d["labels"] for d in self.predict_detailed(texts)]

    def label(self, records: list[Record]) -> list[Record]:
        """New Records (id, text and a copy of meta kept) labelled by the rules, with
        meta["teacher"] = "rules"; under policy "ignore", meta["masked_labels"] lists the hedged labels."""
        records = list(records)
        details = self.predict_detailed([r.text for r in records])
        out = []
        for r, d in zip(records, details):
            meta = copy.deepcopy(r.meta)
            meta["teacher"] = "rules"
            if self.uncertain == "ignore":
                meta["masked_labels"] = list(d["uncertain"])
            else:
                meta.pop("masked_labels", None)
            out.append(Record(id=r.id, text=r.text, labels=list(d["labels"]), meta=meta))
        return out


__all__ = ["Mention", "POLICIES", "PHRASES_PATH", "RadiologyRuleLabeler", "build_pipeline",
           "compile_phrase", "expand_phrase", "load_phrases"]
