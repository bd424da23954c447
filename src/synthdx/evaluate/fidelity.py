"""How much does a synthetic record set look like a real one? Simple, fast, hand-checkable measures.

    report = fidelity_report(synthetic_records, real_records, names=RADIOLOGY_LABELS.names)
    rows = fidelity_table(report)          # [[measure, synthetic, real], ...] under FIDELITY_HEADER

The report (a JSON-serialisable dict) holds:

* ``n``: the number of records of each set.
* ``prevalence``: the share of labelled records carrying each label, per set, and the absolute
  difference per label (with its mean). Records with ``labels is None`` are left out; a set without
  any labelled record has ``None`` (prevalence skipped for it, and no difference).
* ``length_words``: words per record (whitespace-separated tokens): mean, sd (sample, ddof=1),
  median, p10 and p90 (numpy's linear-interpolation percentiles).
* ``vocabulary``: word-level (lowercase alphabetic tokens, ``[a-z]+``) vocabularies: sizes, Jaccard of
  the two vocabularies, the share of synthetic word occurrences whose word is in the real vocabulary
  (and vice versa), and the words most over-represented in each set by the log-odds ratio with an
  informative Dirichlet prior (Monroe, Colaresi & Quinn 2008, "Fightin' Words"; the prior is the
  pooled counts of both sets), ranked by its z-score.
* ``cues``: the share of sentences containing a negation cue / an uncertainty (hedge) cue. The cue
  phrases are medspaCy's default English ConText rules (categories NEGATED_EXISTENCE and
  POSSIBLE_EXISTENCE; TERMINATE rules, which end a scope rather than open one, are left out), read from
  the JSON file in the installed medspacy wheel and matched as lowercase word-boundary regular
  expressions. This is a **cue rate, not a scope analysis**: "No pneumothorax" and "free air" both
  count as a negation cue whether or not the cue governs a finding.
* ``two_sample``: a classifier two-sample test. A balanced random subsample of min(n_syn, n_real)
  records per set; TF-IDF (word 1-2 grams) + logistic regression predicts "synthetic?"; stratified
  5-fold cross-validated ROC AUC (mean of the fold AUCs) with a 95% interval from the fold AUCs
  (mean +- t(0.975, k-1) * sd / sqrt(k), clipped to [0, 1]; folds share training data, so the interval
  is approximate), and a permutation p-value (``sklearn.model_selection.permutation_test_score``, the
  same folds, ``n_permutations`` label shuffles; the smallest possible p is 1 / (n_permutations + 1)).
  AUC near 0.5 means a simple bag-of-n-grams model cannot tell synthetic from real; near 1 means it
  easily can. The TF-IDF weights are fitted once on the texts of the subsample (no labels are used, so
  neither the AUC nor the permutation null sees the labels of held-out records), which makes the
  5 x (1 + n_permutations) logistic-regression fits cheap. Skipped, with a note, when a set has fewer
  than 10 records.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..records import Record

__all__ = ["FIDELITY_HEADER", "MIN_TWO_SAMPLE", "cue_patterns", "fidelity_report", "fidelity_table",
           "sentence_cue_rates", "split_sentences", "two_sample_test", "words"]

FIDELITY_HEADER = ["measure", "synthetic", "real"]
MIN_TWO_SAMPLE = 10  # records per side below which the classifier two-sample test is skipped
TOP_WORDS = 10
TOP_CUES = 5
CUE_NOTE = ("share of sentences containing a medspaCy ConText cue phrase (lowercase word-boundary "
            "regex match); a cue rate, not a scope analysis")

_WORD_RE = re.compile(r"[a-z]+")
# sentence ends: . ! ? followed by whitespace, and line breaks (report sections)
_SENT_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_ALNUM_RE = re.compile(r"[a-z0-9]")
_B = "[a-z0-9]"  # characters that make a word: a cue must not touch one on a side where it is a word


# ----------------------------------------------------------------------------- text basics

def words(text: str) -> list[str]:
    """Lowercase alphabetic tokens: "Mild cardiomegaly, x-ray 2" -> ["mild", "cardiomegaly", "x", "ray"]."""
    return _WORD_RE.findall(text.lower())


def split_sentences(text: str) -> list[str]:
    """Sentences split after . ! ? (followed by whitespace) and at line breaks; empty and
    punctuation-only pieces dropped. "No pneumothorax. Heart is normal." -> 2 sentences."""
    out = []
    for s in _SENT_SPLIT_RE.split(text):
        s = s.strip()
        if s and _ALNUM_RE.search(s.lower()):
            out.append(s)
    return out


# ----------------------------------------------------------------------------- ConText cues

def _context_rules_path() -> Path:
    """medspaCy's own English ConText rules, shipped in the medspacy wheel's `resources/` (the same
    file teachers/radiology_rules.py loads). Found without importing medspacy (which loads spaCy)."""
    spec = importlib.util.find_spec("medspacy")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("medspacy is not installed: its default ConText rules are needed")
    path = Path(spec.origin).resolve().parents[1] / "resources" / "en" / "context_rules.json"
    if not path.exists():
        raise FileNotFoundError(f"medspaCy's default ConText rules are missing: {path}")
    return path


def _is_clitic(alt: str) -> bool:
    return alt.startswith("n'")  # "n't": spaCy splits "wasn't" -> "was" "n't"; no space before it


def _alt_regex(alt: str) -> str:
    """One token alternative as a regex, with word boundaries on its word-character ends."""
    r = re.escape(alt)
    if alt[:1].isalnum() and not _is_clitic(alt):
        r = f"(?<!{_B})" + r
    if alt[-1:].isalnum():
        r = r + f"(?!{_B})"
    return r


def _tokens_regex(tokens: list[tuple[list[str], bool]]) -> str | None:
    """A regex from spaCy-style tokens, each (alternatives, optional). Tokens are separated by
    whitespace (`\\s+`), or by optional whitespace next to punctuation and before a clitic ("n't")."""
    if not tokens or all(opt for _, opt in tokens):
        return None  # a pattern that can match the empty string is no cue
    first = next(i for i, (_, opt) in enumerate(tokens) if not opt)
    parts: list[str] = []
    for i, (alts, optional) in enumerate(tokens):
        pieces = []
        for alt in alts:
            if i < first:  # a leading optional token: separator after it
                nxt = tokens[i + 1][0]
                tight = not alt[-1:].isalnum() or any(not a[:1].isalnum() or _is_clitic(a) for a in nxt)
                pieces.append(_alt_regex(alt) + (r"\s*" if tight else r"\s+"))
            elif i == first:
                pieces.append(_alt_regex(alt))
            else:  # separator before it
                prev = tokens[i - 1][0]
                tight = (not alt[:1].isalnum() or _is_clitic(alt)
                         or any(not p[-1:].isalnum() for p in prev))
                pieces.append((r"\s*" if tight else r"\s+") + _alt_regex(alt))
        group = "(?:" + "|".join(pieces) + ")"
        parts.append(group + "?" if optional else group)
    return "".join(parts)


def _rule_regex(rule: dict[str, Any]) -> str:
    """The regex of one ConText rule: from its token pattern where it uses only LOWER (a string or
    an IN list) and the '?' operator, else from its literal (whitespace-separated words)."""
    pattern = rule.get("pattern")
    tokens: list[tuple[list[str], bool]] | None = None
    if pattern:
        tokens = []
        for tok in pattern:
            lower, op = tok.get("LOWER"), tok.get("OP")
            if set(tok) - {"LOWER", "OP"} or op not in (None, "?"):
                tokens = None
                break
            if isinstance(lower, str):
                alts = [lower]
            elif isinstance(lower, dict) and set(lower) == {"IN"}:
                alts = [str(a) for a in lower["IN"]]
            else:
                tokens = None
                break
            tokens.append(([a.lower() for a in alts if a], op == "?"))
    regex = _tokens_regex(tokens) if tokens else None
    if regex is None:
        regex = _tokens_regex([([w], False) for w in str(rule["literal"]).lower().split()])
    if regex is None:
        raise ValueError(f"ConText rule with an empty literal: {rule!r}")
    return regex


@cache
def cue_patterns() -> dict[str, re.Pattern]:
    """{"negation": regex, "hedge": regex}: one alternation per cue kind over medspaCy's default
    NEGATED_EXISTENCE / POSSIBLE_EXISTENCE rules (TERMINATE rules left out), longest literal first so a
    match reports the longest cue ("no evidence of" rather than "no")."""
    with open(_context_rules_path(), encoding="utf-8") as f:
        rules = json.load(f)["context_rules"]
    kinds = {"negation": "NEGATED_EXISTENCE", "hedge": "POSSIBLE_EXISTENCE"}
    out = {}
    for kind, category in kinds.items():
        chosen = [r for r in rules if r["category"].upper() == category
                  and str(r.get("direction", "")).upper() not in ("TERMINATE", "PSEUDO")]
        chosen.sort(key=lambda r: -len(str(r["literal"])))
        out[kind] = re.compile("|".join(f"(?:{_rule_regex(r)})" for r in chosen))
    return out


def _cue_text(text: str) -> str:
    return text.lower().replace("\u2019", "'")  # curly apostrophe: "doesn’t" -> "doesn't"


def sentence_cue_rates(texts: Iterable[str]) -> dict[str, Any]:
    """Sentences with a negation / hedge cue, over all sentences of all texts (see the module doc)."""
    pats = cue_patterns()
    n = 0
    hits = {k: 0 for k in pats}
    which: dict[str, Counter] = {k: Counter() for k in pats}
    for text in texts:
        for sent in split_sentences(_cue_text(text)):
            n += 1
            for kind, pat in pats.items():
                found = {" ".join(m.group(0).split()) for m in pat.finditer(sent)}
                if found:
                    hits[kind] += 1
                    which[kind].update(found)  # a cue counts once per sentence
    rate = {k: hits[k] / n if n else None for k in pats}
    return {"n_sentences": n,
            "negation_rate": rate["negation"], "hedge_rate": rate["hedge"],
            "negation_sentences": hits["negation"], "hedge_sentences": hits["hedge"],
            "top_negation_cues": [[c, k] for c, k in which["negation"].most_common(TOP_CUES)],
            "top_hedge_cues": [[c, k] for c, k in which["hedge"].most_common(TOP_CUES)]}


# ----------------------------------------------------------------------------- the measures

def _prevalence(records: Sequence[Record], names: list[str]) -> tuple[dict[str, float] | None, int]:
    labelled = [r for r in records if r.labels is not None]
    if not labelled:
        return None, 0
    counts = Counter(lab for r in labelled for lab in set(r.labels))
    return {n: counts[n] / len(labelled) for n in names}, len(labelled)


def _length_stats(texts: Sequence[str]) -> dict[str, float]:
    x = np.array([len(t.split()) for t in texts], dtype=float)
    return {"mean": float(x.mean()),
            "sd": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
            "median": float(np.median(x)),
            "p10": float(np.percentile(x, 10)),
            "p90": float(np.percentile(x, 90))}


def _log_odds(c1: Counter, c2: Counter, k: int = TOP_WORDS) -> tuple[list[dict], list[dict]]:
    """Words most over-represented in set 1 (and in set 2) by the log-odds ratio with an informative
    Dirichlet prior equal to the pooled counts (Monroe et al. 2008, eq. 16-22), ranked by z-score."""
    vocab = sorted(set(c1) | set(c2))
    if not vocab:
        return [], []
    y1 = np.array([c1[w] for w in vocab], dtype=float)
    y2 = np.array([c2[w] for w in vocab], dtype=float)
    a = y1 + y2  # prior counts
    n1, n2, a0 = y1.sum(), y2.sum(), a.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        l1 = np.log(y1 + a) - np.log(n1 + a0 - y1 - a)
        l2 = np.log(y2 + a) - np.log(n2 + a0 - y2 - a)
        delta = l1 - l2
        z = delta / np.sqrt(1.0 / (y1 + a) + 1.0 / (y2 + a))
    z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)  # a one-word vocabulary: no contrast

    def top(order: np.ndarray, sign: float) -> list[dict]:
        out = []
        for i in order[:k]:
            if sign * z[i] <= 0:
                break
            out.append({"word": vocab[i], "z": float(z[i]), "log_odds_ratio": float(delta[i]),
                        "synthetic_count": int(y1[i]), "real_count": int(y2[i])})
        return out

    # stable sorts with the vocabulary in alphabetical order: ties break alphabetically
    return top(np.argsort(-z, kind="stable"), 1.0), top(np.argsort(z, kind="stable"), -1.0)


def _vocabulary(syn_texts: Sequence[str], real_texts: Sequence[str]) -> dict[str, Any]:
    cs = Counter(w for t in syn_texts for w in words(t))
    cr = Counter(w for t in real_texts for w in words(t))
    vs, vr = set(cs), set(cr)
    union = vs | vr
    ns, nr = sum(cs.values()), sum(cr.values())
    over_syn, over_real = _log_odds(cs, cr)
    return {
        "synthetic_size": len(vs), "real_size": len(vr), "shared": len(vs & vr),
        "jaccard": len(vs & vr) / len(union) if union else None,
        "synthetic_tokens": ns, "real_tokens": nr,
        # share of word occurrences of one set whose word occurs in the other set's vocabulary
        "synthetic_tokens_in_real_vocab": sum(c for w, c in cs.items() if w in vr) / ns if ns else None,
        "real_tokens_in_synthetic_vocab": sum(c for w, c in cr.items() if w in vs) / nr if nr else None,
        "over_represented_in_synthetic": over_syn,
        "over_represented_in_real": over_real,
    }


def two_sample_test(synthetic_texts: Sequence[str], real_texts: Sequence[str], seed: int = 0,
                    n_permutations: int = 50, n_folds: int = 5) -> dict[str, Any]:
    """The classifier two-sample test of the module doc. Returns {"skipped": False, "auc", "auc_ci",
    "fold_aucs", "p_value", "n_permutations", "n_per_side", ...}, or {"skipped": True, "note"} when a
    side has fewer than MIN_TWO_SAMPLE texts or the texts have no words at all."""
    from scipy import stats
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score, permutation_test_score

    if n_permutations < 0:
        raise ValueError(f"n_permutations must be >= 0, got {n_permutations}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    m = min(len(synthetic_texts), len(real_texts))
    if m < max(MIN_TWO_SAMPLE, n_folds):
        return {"skipped": True,
                "note": f"two-sample test skipped: {len(synthetic_texts)} synthetic and {len(real_texts)} "
                        f"real records; it needs at least {max(MIN_TWO_SAMPLE, n_folds)} on each side"}
    rng = np.random.default_rng(seed)
    syn = [synthetic_texts[i] for i in rng.choice(len(synthetic_texts), m, replace=False)]
    real = [real_texts[i] for i in rng.choice(len(real_texts), m, replace=False)]
    texts = syn + real
    y = np.array([1] * m + [0] * m)  # 1 = synthetic
    try:
        # label-free, so fitting it on all sampled texts leaks no label into the held-out folds
        X = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True).fit_transform(texts)
    except ValueError:  # empty vocabulary: no text has a word
        return {"skipped": True, "note": "two-sample test skipped: the texts contain no words"}
    # the dual liblinear solver: the same L2 problem, ~50x faster than the primal one here (features
    # outnumber records, and the permuted labels of the null are slow to fit in the primal)
    clf = LogisticRegression(C=1.0, solver="liblinear", dual=True, max_iter=1000, random_state=seed)
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = cross_val_score(clf, X, y, cv=cv, scoring="roc_auc", n_jobs=1)
    auc = float(folds.mean())
    half = float(stats.t.ppf(0.975, n_folds - 1) * folds.std(ddof=1) / math.sqrt(n_folds))
    p_value = None
    if n_permutations > 0:
        _, _, p = permutation_test_score(clf, X, y, cv=cv, scoring="roc_auc", n_permutations=n_permutations,
                                         random_state=seed, n_jobs=1)
        p_value = float(p)
    return {
        "skipped": False, "auc": auc, "auc_ci": [max(0.0, auc - half), min(1.0, auc + half)],
        "fold_aucs": [float(v) for v in folds], "p_value": p_value, "n_permutations": n_permutations,
        "n_per_side": m, "n_folds": n_folds,
        "method": "TF-IDF word 1-2 grams + logistic regression, stratified k-fold ROC AUC (1 = synthetic)",
        "ci_method": "95% t-interval over the fold AUCs (approximate: folds share training data)",
        "note": "AUC near 0.5: a simple model cannot tell synthetic from real; near 1: it easily can",
    }


def fidelity_report(synthetic: Sequence[Record], real: Sequence[Record], names: Iterable[str] | None = None,
                    seed: int = 0, n_permutations: int = 50) -> dict[str, Any]:
    """Synthetic-vs-real fidelity of two record sets (see the module doc for every measure).

    `names`: the labels whose prevalence to report (a list or a LabelSpace); default: every label seen
    in either set, sorted. `seed` drives the two-sample test's subsampling, folds and permutations."""
    for what, recs in (("synthetic", synthetic), ("real", real)):
        if isinstance(recs, (str, Record)):
            raise TypeError(f"{what}: pass a list of Records")
        if len(recs) == 0:
            raise ValueError(f"the {what} record set is empty")
        bad = next((r for r in recs if not isinstance(r, Record)), None)
        if bad is not None:
            raise TypeError(f"{what}: expected Records, got {type(bad).__name__}")
    if names is None:
        names = sorted({lab for recs in (synthetic, real) for r in recs if r.labels for lab in r.labels})
    names = list(names)
    syn_texts = [r.text or "" for r in synthetic]
    real_texts = [r.text or "" for r in real]

    p_syn, nl_syn = _prevalence(synthetic, names)
    p_real, nl_real = _prevalence(real, names)
    diff = None
    if p_syn is not None and p_real is not None:
        diff = {n: abs(p_syn[n] - p_real[n]) for n in names}
    prevalence = {
        "names": names, "synthetic": p_syn, "real": p_real, "abs_diff": diff,
        "mean_abs_diff": float(np.mean(list(diff.values()))) if diff else None,
        "n_labelled": {"synthetic": nl_syn, "real": nl_real},
    }
    if p_syn is None or p_real is None:
        prevalence["note"] = "prevalence skipped for a set without labelled records"

    return {
        "n": {"synthetic": len(synthetic), "real": len(real)},
        "prevalence": prevalence,
        "length_words": {"synthetic": _length_stats(syn_texts), "real": _length_stats(real_texts)},
        "vocabulary": _vocabulary(syn_texts, real_texts),
        "cues": {"synthetic": sentence_cue_rates(syn_texts), "real": sentence_cue_rates(real_texts),
                 "note": CUE_NOTE},
        "two_sample": two_sample_test(syn_texts, real_texts, seed=seed, n_permutations=n_permutations),
        "seed": seed,
    }


# ----------------------------------------------------------------------------- the table

def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, int):
        return str(x)
    return f"{float(x):.{digits}f}"


def fidelity_table(report: dict[str, Any]) -> list[list[str]]:
    """Rows [measure, synthetic, real] (strings; header FIDELITY_HEADER) of a `fidelity_report`.
    A measure of both sets together (Jaccard, the two-sample AUC) is in the synthetic column, with
    the real column "—"; a per-label prevalence row carries the absolute difference in its name."""
    d = "—"
    rows: list[list[str]] = [["records", _f(report["n"]["synthetic"]), _f(report["n"]["real"])]]
    prev = report["prevalence"]
    ps, pr, diff = prev["synthetic"] or {}, prev["real"] or {}, prev["abs_diff"] or {}
    if prev["synthetic"] is not None or prev["real"] is not None:
        rows.append(["labelled records", _f(prev["n_labelled"]["synthetic"]), _f(prev["n_labelled"]["real"])])
        for n in prev["names"]:
            name = f"prevalence: {n}" + (f" (|diff| {_f(diff[n])})" if n in diff else "")
            rows.append([name, _f(ps.get(n)), _f(pr.get(n))])
        if prev.get("mean_abs_diff") is not None:
            rows.append(["prevalence: mean |diff|", _f(prev["mean_abs_diff"]), d])
    ls, lr = report["length_words"]["synthetic"], report["length_words"]["real"]
    rows.append(["words per record: mean (sd)", f"{_f(ls['mean'], 1)} ({_f(ls['sd'], 1)})",
                 f"{_f(lr['mean'], 1)} ({_f(lr['sd'], 1)})"])
    rows.append(["words per record: median [p10, p90]",
                 f"{_f(ls['median'], 1)} [{_f(ls['p10'], 1)}, {_f(ls['p90'], 1)}]",
                 f"{_f(lr['median'], 1)} [{_f(lr['p10'], 1)}, {_f(lr['p90'], 1)}]"])
    v = report["vocabulary"]
    rows.append(["vocabulary size (words)", _f(v["synthetic_size"]), _f(v["real_size"])])
    rows.append(["vocabulary Jaccard", _f(v["jaccard"]), d])
    rows.append(["word occurrences in the other set's vocabulary",
                 _f(v["synthetic_tokens_in_real_vocab"]), _f(v["real_tokens_in_synthetic_vocab"])])
    rows.append(["over-represented words (log-odds z)",
                 ", ".join(w["word"] for w in v["over_represented_in_synthetic"]) or d,
                 ", ".join(w["word"] for w in v["over_represented_in_real"]) or d])
    cs, cr = report["cues"]["synthetic"], report["cues"]["real"]
    rows.append(["sentences", _f(cs["n_sentences"]), _f(cr["n_sentences"])])
    rows.append(["sentences with a negation cue", _f(cs["negation_rate"]), _f(cr["negation_rate"])])
    rows.append(["sentences with a hedge cue", _f(cs["hedge_rate"]), _f(cr["hedge_rate"])])
    t = report["two_sample"]
    if t.get("skipped"):
        rows.append(["two-sample AUC", t["note"], d])
    else:
        lo, hi = t["auc_ci"]
        rows.append([f"two-sample AUC [95% CI] ({t['n_per_side']} per side)",
                     f"{_f(t['auc'])} [{_f(lo)}, {_f(hi)}]", d])
        if t["p_value"] is not None:
            rows.append([f"two-sample permutation p ({t['n_permutations']} permutations)", _f(t["p_value"]), d])
    return rows
