"""Synthetic chest X-ray reports whose labels are known by construction.

For users who have no reports at all. `RadiologyReportGenerator` samples a set of findings with
realistic prevalence and co-occurrence, then renders it as report text in the format the IU X-ray
loader produces (``FINDINGS: ...\\nIMPRESSION: ...``), with the 14 labels of
`synthdx.tasks.radiology.RADIOLOGY_LABELS`.

Sampling
--------
A report is "normal" with probability p(No Finding). Otherwise a latent clinical scenario is drawn
(incidental-only, old granulomatous disease, chronic cardiac/post-surgical, CHF, infection,
atelectasis/low volumes, COPD, nodule/mass, trauma, inpatient lines) and each finding label is drawn
independently given the scenario, so co-occurrence comes from the mixture (effusion with edema and
cardiomegaly, pneumonia with consolidation and opacity, devices with cardiomegaly, ...). Per-label
logit shifts are solved for so that the marginal prevalence equals the configured one exactly (in
expectation). `fit()` re-estimates the mixture by EM on labelled records (initialised from the
built-in scenarios) and the marginals from their label frequencies.

Labelling policy (what a label means in the generated text)
-----------------------------------------------------------
* A label is on iff its finding is asserted in the text, definitely ("Small left pleural effusion.")
  or hedged ("may represent", "possibly", "probable", "questionable", "suspicious for", "cannot be
  excluded", "likely", "X versus Y" -- then both X and Y are on). Hedged mentions are therefore
  labelled positive, matching a 'positive' (U-ones) uncertainty policy and the curated IU X-ray MeSH
  indexing, which indexes hedged findings.
* "cannot exclude X" is only ever written for a present X: it is a positive hedge, never a negation.
* Absent findings are either not mentioned or explicitly negated ("No pneumothorax", "without
  effusion", "negative for", "clear of", "free of"). Qualified negations ("no large pleural effusion",
  "no definite consolidation", "no focal airspace disease", "no typical findings of pulmonary edema")
  keep the label off, as in the curated labels.
* Abnormalities outside the 14 labels (scoliosis, degenerative spine, tortuous/calcified aorta,
  hyperinflation without emphysema, scarring, low lung volumes, hiatal hernia, ...) leave the label
  list empty ([] = labelled, no label) or add nothing; they switch "No Finding" off.
* "No Finding" means no abnormality at all and is exclusive with every other label.
* Conventions: old/healed fractures are Fracture; calcified granulomas are Granuloma (never called
  "nodules"); scarring alone is not Lung Opacity unless described as an opacity/density;
  hyperinflation alone is not Emphysema; sternotomy wires, surgical clips, EKG leads and catheters are
  Support Devices; "collapse" is Atelectasis; "CHF" and "vascular congestion" are Edema; opacity,
  airspace disease, infiltrate and density are Lung Opacity.

Text realism: varied phrasings with severity/laterality/location, normal statements for unaffected
organs, negation lists, technique/comparison lines, de-identified spans (``XXXX``), abbreviations
("CP angles", "PTX", "w/", "RLL"), typos (never inside a finding keyword or a negation word),
shuffled sentence order and numbered impressions. Never reads real data at runtime.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..records import Record
from ..tasks.radiology import RADIOLOGY_LABELS

# ----------------------------------------------------------------------------------------- labels

LABELS: tuple[str, ...] = tuple(RADIOLOGY_LABELS.names)
NF = "No Finding"
CM, LO, AT, EF, ED = "Cardiomegaly", "Lung Opacity", "Atelectasis", "Pleural Effusion", "Edema"
PN, CO, PX, NM, GR = "Pneumonia", "Consolidation", "Pneumothorax", "Nodule or Mass", "Granuloma"
EM, FX, SD = "Emphysema or COPD", "Fracture", "Support Devices"
FINDING_LABELS: tuple[str, ...] = tuple(n for n in LABELS if n != NF)
assert set(FINDING_LABELS) == {CM, LO, AT, EF, ED, PN, CO, PX, NM, GR, EM, FX, SD}

GENERATOR_NAME = "radiology-reports"

# Outpatient/ED chest radiographs, from general clinical knowledge (IU X-ray-like population).
DEFAULT_PREVALENCE: dict[str, float] = {
    NF: 0.37, CM: 0.10, LO: 0.16, AT: 0.08, EF: 0.05, ED: 0.03, PN: 0.02, CO: 0.015, PX: 0.01,
    NM: 0.035, GR: 0.10, EM: 0.045, FX: 0.03, SD: 0.08,
}


@dataclass(frozen=True)
class Scenario:
    """A latent clinical scenario of an abnormal report: label probabilities (labels not listed get
    `floor`) and the probability of extra non-label (incidental) findings."""

    name: str
    weight: float
    probs: Mapping[str, float]
    incidental: float = 0.3
    floor: float = 0.01

    def vector(self) -> np.ndarray:
        return np.array([self.probs.get(n, self.floor) for n in FINDING_LABELS], dtype=float)


DEFAULT_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("incidental", 0.30, {GR: 0.06, CM: 0.05, LO: 0.05, SD: 0.04, EM: 0.03, AT: 0.04,
                                  FX: 0.03, NM: 0.02}, incidental=1.0, floor=0.005),
    Scenario("granulomatous", 0.13, {GR: 0.95, NM: 0.12, LO: 0.08, AT: 0.05}, incidental=0.3),
    Scenario("cardiac", 0.14, {CM: 0.65, SD: 0.45, EF: 0.10, ED: 0.08, AT: 0.10, LO: 0.10},
             incidental=0.45),
    Scenario("chf", 0.07, {CM: 0.80, ED: 0.55, EF: 0.55, AT: 0.35, LO: 0.40, SD: 0.30},
             incidental=0.2),
    Scenario("infection", 0.08, {LO: 0.85, PN: 0.30, CO: 0.22, EF: 0.15, AT: 0.25}, incidental=0.15),
    Scenario("atelectasis", 0.12, {AT: 0.75, LO: 0.60, EF: 0.12, CM: 0.10}, incidental=0.35),
    Scenario("copd", 0.06, {EM: 0.90, LO: 0.20, NM: 0.10, GR: 0.15, AT: 0.10}, incidental=0.3),
    Scenario("nodule", 0.04, {NM: 0.90, LO: 0.25, GR: 0.15}, incidental=0.25),
    Scenario("trauma", 0.03, {FX: 0.85, PX: 0.20, LO: 0.20, AT: 0.15, EF: 0.10}, incidental=0.2),
    Scenario("inpatient-lines", 0.03, {SD: 0.95, EF: 0.35, AT: 0.40, LO: 0.40, PX: 0.12, ED: 0.15,
                                       CM: 0.30}, incidental=0.1),
)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p) - np.log1p(-p)


def _calibrate(weights: np.ndarray, probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Shift each label's logits (one shift per label, all scenarios) so that the mixture marginal
    sum_k w_k p_kl equals target_l. Bisection; exact for 0 < target < 1."""
    base = _logit(probs)
    out = probs.copy()
    for j, t in enumerate(target):
        if t <= 0:
            out[:, j] = 0.0
            continue
        if t >= 1:
            out[:, j] = 1.0
            continue
        lo, hi = -40.0, 40.0
        for _ in range(80):
            mid = (lo + hi) / 2
            m = float(weights @ (1 / (1 + np.exp(-(base[:, j] + mid)))))
            lo, hi = (mid, hi) if m < t else (lo, mid)
        out[:, j] = 1 / (1 + np.exp(-(base[:, j] + (lo + hi) / 2)))
    return out


# ------------------------------------------------------------------------------ text helpers

_NEG_WORDS = r"no|not|without|negative|clear|free|w/o|nor|none|resolved"
# Word stems that carry a finding or a negation: typos and random de-identification never touch them.
_PROTECTED = re.compile(
    r"(cardiomegal|enlarg|opacit|opacif|airspace|infiltrat|densit|atelecta|collapse|effusion|fluid|"
    r"edema|congest|chf|failure|pneumon|infect|consolidat|pneumothora|ptx|nodul|mass|granulom|"
    r"emphysem|copd|obstructive|fractur|pacemaker|aicd|defibrillator|sternotomy|wire|clip|catheter|"
    r"picc|port|tube|line|lead|device|stent|hardware|valve|cabg|recorder|generator|pacer|filter|marker|"
    r"large|engorg|prominen|vascul|vessel|callus|heart|lung|pleura|"
    r"^(" + _NEG_WORDS + r")$|exclude|possibl|probabl|likely|may|versus|suspic|question|concern)",
    re.IGNORECASE,
)

_ABBREV_MAP = {
    "costophrenic angles": "CP angles", "costophrenic angle": "CP angle", "pneumothorax": "PTX",
    "without": "w/o", "with": "w/", "normal": "nl", "right lower lobe": "RLL", "left lower lobe": "LLL",
    "right upper lobe": "RUL", "left upper lobe": "LUL", "right middle lobe": "RML", "bilateral": "b/l",
    "status post": "s/p", "congestive heart failure": "CHF", "superior vena cava": "SVC",
    "central venous catheter": "CVC", "approximately": "approx",
}
_ABBREV = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _ABBREV_MAP), key=len, reverse=True)) + r")\b",
                     re.IGNORECASE)

# Spans the IU de-identifier typically blanked (dates, "likely", "ray", anatomy words...).
_DEID_MAP = {
    "most likely": "most XXXX", "likely": "XXXX", "costophrenic angles": "costophrenic XXXX",
    "bony structures": "XXXX XXXX", "osseous structures": "XXXX XXXX",
    "pulmonary vascularity": "pulmonary XXXX", "pulmonary vasculature": "pulmonary XXXX",
    "AP and lateral": "XXXX and lateral", "suggesting": "XXXX",
    "sternotomy wires": "sternotomy XXXX", "pacemaker generator": "XXXX generator",
    "chest port": "chest XXXX", "pacer generator": "XXXX generator", "CABG markers": "CABG XXXX",
}
_DEID = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _DEID_MAP), key=len, reverse=True)) + r")\b")

_ARTICLE = re.compile(r"\b([Aa]) (?=(?:[aeiouAEIOU]|8\b|8\.|11\b|18\b|80\b))")
_SPACES = re.compile(r"\s+")
_SPACE_PUNCT = re.compile(r"\s+([,.;:])")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _clean(s: str) -> str:
    if "  " in s or s[:1] == " " or s[-1:] == " ":
        s = _SPACES.sub(" ", s).strip()
    if " ," in s or " ." in s or " ;" in s or " :" in s:
        s = _SPACE_PUNCT.sub(r"\1", s)
    s = s.replace(",,", ",")
    if "a " in s or "A " in s:
        s = _ARTICLE.sub(lambda m: m.group(1) + "n ", s)
    return s


def _sentence(s: str) -> str:
    s = _cap(_clean(s))
    if s and s[-1] not in ".!?":
        s += "."
    return s


# ---------------------------------------------------------------------------- finding fields

_LOCS: dict[str, list[tuple[str, str, str]]] = {  # side -> (adjective, prepositional, zone)
    "right": [("right lower lobe", "in the right lower lobe", "lobe"),
              ("right basilar", "at the right lung base", "base"),
              ("right base", "at the right base", "base"),
              ("right middle lobe", "in the right middle lobe", "lobe"),
              ("right upper lobe", "in the right upper lobe", "lobe"),
              ("right perihilar", "in the right perihilar region", "other"),
              ("right midlung", "in the right midlung", "other")],
    "left": [("left lower lobe", "in the left lower lobe", "lobe"),
             ("left basilar", "at the left lung base", "base"),
             ("left base", "at the left base", "base"),
             ("lingular", "in the lingula", "lobe"),
             ("left upper lobe", "in the left upper lobe", "lobe"),
             ("retrocardiac", "in the retrocardiac region", "base"),
             ("left midlung", "in the left midlung", "other")],
    "bilateral": [("bibasilar", "at both lung bases", "base"),
                  ("bilateral lower lobe", "in both lower lobes", "lobe"),
                  ("bilateral perihilar", "in both perihilar regions", "other"),
                  ("bilateral basilar", "in the lung bases bilaterally", "base"),
                  ("multifocal", "in both lungs", "other")],
}
_ORD = ["3rd", "4th", "5th", "6th", "7th", "9th", "10th"]  # 8th avoided ("a 8th")
_MM = [4, 5, 6, 7, 9, 10, 12, 13, 14, 15, 16, 17, 19, 20, 22, 25]
_CM = ["1.5", "1.9", "2.3", "2.7", "3.2", "3.5", "4.1", "5", "6.2"]


def _side(rng: random.Random, p_bilateral: float = 0.15) -> str:
    r = rng.random()
    return "bilateral" if r < p_bilateral else ("right" if r < (1 + p_bilateral) / 2 + 0.05 else "left")


_CHOICES: dict[str, Sequence[str]] = {
    "sev": ("mild", "mild", "minimal", "moderate", ""),
    "sevly": ("mildly", "mildly", "moderately", "markedly", ""),
    "esev": ("small", "small", "trace", "moderate", "large", "minimal", ""),
    "psev": ("tiny", "small", "small", "moderate", "large", ""),
    "csev": ("mild", "mild", "moderate", "marked", "", "stable"),
    "desc": ("patchy", "hazy", "streaky", "ill-defined", "subtle", "mild", "focal", "faint", "", ""),
    "atype": ("subsegmental", "platelike", "linear", "discoid", "dependent", ""),
    "age": ("acute", "old", "healed", "healing", "remote", "age-indeterminate", "nondisplaced", "", "old"),
    "mm": tuple(map(str, _MM)), "cm": tuple(_CM), "n": ("3", "4", "5", "6"),
    "tip": ("SVC", "lower SVC", "cavoatrial junction", "right atrium", "superior vena cava"),
}


class _Fields(dict):
    """Template fields of one mention, drawn lazily (only those a template uses) but consistently:
    side, location, plural forms and ordinals agree with each other."""

    def __init__(self, rng: random.Random, zones: Sequence[str], p_bilateral: float):
        side = _side(rng, p_bilateral)
        pool = [x for x in _LOCS[side] if x[2] in zones] or _LOCS[side]
        loc, in_loc, _ = rng.choice(pool)
        side1 = side if side != "bilateral" else rng.choice(["right", "left"])
        plural = side == "bilateral"
        super().__init__(side=side, side1=side1, other1="left" if side1 == "right" else "right", loc=loc,
                         in_loc=in_loc, s="s" if plural else "", a_="" if plural else "a ",
                         is_="are" if plural else "is",
                         cpa="both costophrenic angles" if plural else f"{side} costophrenic angle")
        self._rng = rng

    def __missing__(self, key: str) -> str:
        if key in ("nth", "nth2"):
            i = self._rng.randrange(len(_ORD) - 1)
            self["nth"], self["nth2"] = _ORD[i], _ORD[i + 1]
            return self[key]
        if key in _CHOICES:
            v = self[key] = self._rng.choice(_CHOICES[key])
            return v
        raise KeyError(key)


def _fields(rng: random.Random, zones: Sequence[str] = ("lobe", "base", "other"),
            p_bilateral: float = 0.15) -> _Fields:
    """All template fields for one mention; templates use the ones they need."""
    return _Fields(rng, zones, p_bilateral)


def _fmt(template: str, f: Mapping[str, str]) -> str:
    return _sentence(template.format_map(f))


# ------------------------------------------------------------------------------- mention specs

@dataclass
class Spec:
    """How to render a set of present labels together. Templates are `str.format` strings over the
    fields of `_fields`. `np`: noun phrases (usable alone, with a temporal word or inside a generic
    hedge); `cl`: full clauses; `hedged`: specific hedged clauses (still positive); `imp`: impression
    phrases. `acute`: whether the finding is acute (drives the impression)."""

    labels: frozenset
    np: Sequence[str] = ()
    cl: Sequence[str] = ()
    hedged: Sequence[str] = ()
    imp: Sequence[str] = ()
    acute: bool | Callable[[dict], bool] = True
    chronic_words: bool = False  # "stable", "unchanged" fit better than "new"
    zones: Sequence[str] = ("lobe", "base", "other")
    p_bilateral: float = 0.15
    prob: float = 1.0  # probability to use this joint rendering when its labels are all present
    absorbs: frozenset = frozenset()  # optional extra present labels this rendering also mentions


def _S(labels, **kw) -> Spec:
    return Spec(labels=frozenset(labels), **kw)


_EFF_TAIL = " and {esev} {side} pleural effusion{s}"

# Joint renderings first (tried in this order), then one spec per single label.
JOINT_SPECS: tuple[Spec, ...] = (
    _S({CM, ED}, absorbs=frozenset({EF}), prob=0.75, cl=[
        "Cardiomegaly with {sev} pulmonary vascular congestion{eff}.",
        "The heart is enlarged and there is {sev} interstitial pulmonary edema{eff}.",
        "Enlarged cardiac silhouette with cephalization and interstitial edema{eff}.",
        "{csev} cardiomegaly with pulmonary edema{eff}.",
        "Cardiomegaly with increased interstitial markings consistent with {sev} edema{eff}."],
       imp=["findings consistent with congestive heart failure{eff}",
            "cardiomegaly with {sev} pulmonary edema{eff}",
            "cardiomegaly and pulmonary vascular congestion{eff}", "CHF with cardiomegaly{eff}"]),
    _S({EF, AT, LO}, prob=0.4, zones=("base",), cl=[
        "{side} basilar opacity, likely a combination of pleural effusion and atelectasis.",
        "{esev} {side} pleural effusion{s} with adjacent basilar airspace opacity, likely atelectasis.",
        ("Opacity at the {side} base with blunting of the {cpa}, consistent with effusion and "
        "atelectasis.")],
       imp=["{side} pleural effusion{s} and basilar atelectasis",
            "{side} basilar opacity, likely effusion and atelectasis"]),
    _S({EF, AT}, prob=0.5, zones=("base",), cl=[
        "{esev} {side} pleural effusion{s} with adjacent {atype} atelectasis.",
        "{esev} {side} effusion{s} and {loc} atelectasis.",
        "There {is_} {a_}{esev} {side} pleural effusion{s} with compressive atelectasis."],
       imp=["{side} pleural effusion{s} with {loc} atelectasis", "{esev} {side} effusion{s} and atelectasis"]),
    _S({ED, LO}, prob=0.6, p_bilateral=1.0, cl=[
        "Bilateral interstitial opacities consistent with pulmonary edema.",
        "Diffuse hazy opacities, likely edema.",
        "Perihilar airspace opacities compatible with alveolar edema.",
        "Increased interstitial opacities with vascular congestion, compatible with {sev} pulmonary edema."],
       imp=["pulmonary edema", "{sev} interstitial pulmonary edema", "diffuse opacities consistent with edema"]),
    _S({LO, PN}, absorbs=frozenset({CO}), prob=0.8, zones=("lobe", "base"), cl=[
        "{desc} {loc} airspace disease consistent with pneumonia{co}.",
        "{desc} opacity {in_loc} concerning for pneumonia{co}.",
        "{loc} infiltrate compatible with pneumonia{co}.",
        "Airspace opacity {in_loc}, most likely pneumonia{co}.",
        "There is {desc} airspace disease {in_loc}{co}, consistent with pneumonia given the history."],
       hedged=["{desc} {loc} opacity which may represent pneumonia{co}.",
               "{loc} opacity{co}, cannot exclude early pneumonia."],
       imp=["{loc} pneumonia", "findings consistent with {loc} pneumonia",
            "{loc} airspace disease concerning for pneumonia",
            "{loc} pneumonia. Recommend follow-up radiographs after treatment to document resolution"]),
    _S({CO, PN}, prob=0.8, zones=("lobe", "base"), cl=[
        "Focal consolidation {in_loc} consistent with pneumonia.",
        "{loc} consolidation compatible with pneumonia.",
        "Dense {loc} consolidation, suspicious for pneumonia."],
       imp=["{loc} pneumonia", "{loc} consolidation consistent with pneumonia"]),
    _S({CO, LO}, prob=0.7, cl=[
        "{loc} airspace consolidation.", "Dense opacity {in_loc} consistent with consolidation.",
        "Consolidative opacity {in_loc}.", "{desc} airspace opacity and consolidation {in_loc}."],
       imp=["{loc} consolidation", "{loc} airspace consolidation"]),
    _S({CO, AT}, prob=0.5, zones=("base", "lobe"), cl=[
        "Consolidation and atelectasis {in_loc}.", "{loc} consolidation versus atelectasis."],
       imp=["{loc} consolidation versus atelectasis", "{loc} consolidation and atelectasis"]),
    _S({AT, LO}, prob=0.7, zones=("base", "other"), cl=[
        "Streaky {loc} opacities, likely atelectasis.",
        "{desc} {loc} opacity consistent with {atype} atelectasis.",
        "{desc} opacity {in_loc} compatible with atelectasis.",
        "Linear opacities {in_loc}, consistent with {atype} atelectasis.",
        "Low lung volumes with {loc} airspace opacity, most likely atelectasis."],
       hedged=["{desc} {loc} opacity, which may represent atelectasis or infiltrate.",
               "{loc} airspace disease, either atelectasis or infiltrate.",
               "{desc} opacity {in_loc}, atelectasis versus early infiltrate.",
               "{loc} atelectasis and/or infiltrate."],
       imp=["{loc} atelectasis", "{desc} {loc} opacity, likely atelectasis",
            "{loc} atelectasis versus infiltrate", "{loc} airspace disease, likely atelectasis"]),
    _S({PX, AT}, prob=0.6, p_bilateral=0.0, cl=[
        "{psev} {side} pneumothorax with partial collapse of the {side} lung.",
        "Large {side} pneumothorax with associated atelectasis of the {side} lower lobe."],
       imp=["{psev} {side} pneumothorax with partial {side} lung collapse"]),
    _S({PX, FX}, prob=0.6, p_bilateral=0.0, cl=[
        "Acute fractures of the {side} {nth} and {nth2} ribs with {a_}{psev} {side} pneumothorax."],
       imp=["{side} rib fractures with {psev} {side} pneumothorax"]),
    _S({NM, LO}, prob=0.4, cl=[
        "{cm} cm nodular opacity {in_loc}.", "Rounded density {in_loc}, concerning for a mass.",
        "{mm} mm nodular density {in_loc}."],
       imp=["{loc} nodular opacity; CT chest recommended", "{cm} cm {loc} mass-like opacity"]),
)

SINGLE_SPECS: dict[str, Spec] = {
    CM: _S({CM}, chronic_words=True, acute=False,
           np=["{csev} cardiomegaly", "{sev} enlargement of the cardiac silhouette",
               "enlarged cardiac silhouette", "{sev} cardiac enlargement", "cardiomegaly"],
           cl=["The heart is {sevly} enlarged.", "Heart size is {sevly} enlarged.",
               "The cardiac silhouette is {sevly} enlarged.", "There is {sev} cardiomegaly.",
               "Cardiomegaly is again noted.", "The heart is large.", "Heart size is large.",
               "The heart is slightly large.", "Heart size remains large.",
               "Heart size is increased, consistent with cardiomegaly."],
           hedged=["The cardiac silhouette appears enlarged, possibly accentuated by AP technique.",
                   "Heart size appears {sevly} enlarged.",
                   "Borderline enlargement of the cardiac silhouette, possibly mild cardiomegaly.",
                   "Cardiac silhouette is likely mildly enlarged."],
           imp=["cardiomegaly", "{csev} cardiomegaly", "stable cardiomegaly",
                "cardiomegaly without evidence of CHF|" + ED, "{csev} cardiomegaly, no overt edema|" + ED]),
    EF: _S({EF}, p_bilateral=0.3,
           np=["{esev} {side} pleural effusion{s}", "{esev} {side} effusion{s}",
               "{esev} layering {side} pleural effusion{s}",
               "blunting of the {cpa} due to {a_}{esev} pleural effusion{s}", "{side} pleural fluid"],
           cl=["There {is_} {a_}{esev} {side} pleural effusion{s}.",
               "{esev} {side} pleural effusion{s} {is_} present.",
               "Blunting of the {cpa} consistent with {a_}{esev} effusion{s}."],
           hedged=["Blunting of the {cpa}, which may represent {a_}small effusion{s} or pleural thickening.",
                   "{esev} {side} effusion{s} versus pleural thickening.",
                   "Meniscus at the {side} base may reflect {a_}small pleural effusion{s}."],
           imp=["{esev} {side} pleural effusion{s}", "{side} pleural effusion{s}", "{esev} {side} effusion{s}"]),
    AT: _S({AT}, zones=("base",), p_bilateral=0.35,
           np=["{sev} {loc} atelectasis", "{atype} atelectasis {in_loc}", "{sev} {atype} {loc} atelectasis",
               "{loc} {atype} atelectasis"],
           cl=["There is {sev} {atype} atelectasis {in_loc}.", "Low lung volumes with {sev} {loc} atelectasis.",
               "Atelectasis is present {in_loc}.",
               "Elevation of the {side1} hemidiaphragm with adjacent atelectasis."],
           hedged=["{loc} atelectasis versus scarring.", "Linear {loc} changes, likely atelectasis.",
                   "Probable {atype} atelectasis {in_loc}."],
           imp=["{loc} atelectasis", "{sev} {loc} atelectasis", "{atype} atelectasis {in_loc}",
                "low lung volumes with {loc} atelectasis"]),
    LO: _S({LO},
           np=["{desc} opacity {in_loc}", "{desc} {loc} opacity", "{desc} {loc} airspace disease",
               "{desc} {loc} airspace opacity", "{loc} infiltrate", "increased density {in_loc}",
               "{desc} {loc} opacities", "ill-defined density {in_loc}"],
           cl=["There is {desc} airspace opacity {in_loc}.", "Increased opacity is seen {in_loc}.",
               "{desc} opacities are noted {in_loc}.", "Streaky {loc} opacities, likely scarring.",
               "{loc} opacity, unchanged from prior, compatible with scarring."],
           hedged=["Subtle opacity {in_loc}, possibly early infiltrate.",
                   "Questionable opacity {in_loc}, which may be due to overlapping soft tissue.",
                   "{desc} {loc} opacity which could represent infiltrate."],
           imp=["{loc} airspace disease", "{desc} {loc} opacity", "{loc} infiltrate",
                "{loc} opacity, follow-up recommended to document resolution"]),
    CO: _S({CO}, zones=("lobe", "base"),
           np=["focal consolidation {in_loc}", "{loc} consolidation", "{sev} consolidation {in_loc}"],
           cl=["There is focal consolidation {in_loc}.", "Consolidation is present {in_loc}."],
           imp=["{loc} consolidation"]),
    PN: _S({PN}, zones=("lobe",),
           np=["{loc} pneumonia"],
           cl=["Findings compatible with {loc} pneumonia.", "Changes of {loc} pneumonia."],
           hedged=["Findings may represent early {loc} pneumonia.", "Possible {loc} pneumonia."],
           imp=["{loc} pneumonia", "findings suggestive of {loc} pneumonia"]),
    ED: _S({ED}, p_bilateral=1.0,
           np=["{sev} pulmonary vascular congestion", "{sev} interstitial pulmonary edema",
               "{sev} central vascular congestion",
               "increased interstitial markings consistent with {sev} pulmonary edema",
               "cephalization of the pulmonary vasculature consistent with vascular congestion",
               "{sev} central pulmonary vascular prominence", "engorged pulmonary vessels",
               "{sev} prominence of the central pulmonary vessels"],
           cl=["There is {sev} pulmonary vascular congestion.", "Pulmonary vessels are engorged.",
               "The pulmonary vasculature is prominent, consistent with {sev} congestion.",
               "Pulmonary vascularity is increased, consistent with {sev} edema."],
           hedged=["Prominent pulmonary vasculature, which may represent {sev} vascular congestion.",
                   "Indistinct vascular margins suggesting early interstitial edema."],
           imp=["{sev} pulmonary edema", "pulmonary vascular congestion", "{sev} interstitial edema"]),
    PX: _S({PX}, p_bilateral=0.0,
           np=["{psev} {side} pneumothorax", "{psev} {side} apical pneumothorax",
               "{side} pneumothorax measuring {n} cm"],
           cl=["There is a {psev} {side} pneumothorax.", "A {psev} {side} apical pneumothorax is present.",
               "{side} pneumothorax, measuring approximately {n} cm at the apex."],
           hedged=["Faint lucency at the {side} apex, possibly a small pneumothorax.",
                   "Possible tiny {side} apical pneumothorax."],
           imp=["{psev} {side} pneumothorax", "{side} pneumothorax"]),
    NM: _S({NM}, p_bilateral=0.05,
           np=["{mm} mm nodule {in_loc}", "{mm} mm {loc} pulmonary nodule", "{loc} nodule",
               "{cm} cm {loc} mass", "spiculated {loc} mass", "{side1} hilar mass",
               "multiple bilateral pulmonary nodules", "noncalcified {loc} nodule"],
           cl=["There is a {mm} mm nodule {in_loc}.", "A {cm} cm mass is present {in_loc}.",
               "A {mm} mm noncalcified nodule is seen {in_loc}, not present on prior exam."],
           hedged=["Questionable {mm} mm nodule {in_loc}, possibly a nipple shadow.",
                   "Possible nodule {in_loc}; recommend repeat PA view with nipple markers."],
           imp=["{loc} pulmonary nodule; recommend CT chest for further evaluation",
                "{cm} cm {loc} mass, concerning for malignancy",
                "{loc} nodule, CT recommended for further characterization", "{loc} nodule"]),
    GR: _S({GR}, acute=False, chronic_words=True,
           np=["calcified granuloma {in_loc}", "{loc} calcified granuloma", "scattered calcified granulomas",
               "small calcified granuloma {in_loc}", "calcified {side1} hilar lymph nodes and granulomas",
               "sequela of prior granulomatous disease", "multiple calcified granulomas {in_loc}",
               "old granulomatous disease"],
           cl=["There is a calcified granuloma {in_loc}.", "Calcified granulomas are noted bilaterally.",
               "Findings of old granulomatous disease.",
               "Calcified granulomas {in_loc} consistent with prior granulomatous disease."],
           hedged=["Small calcified focus {in_loc}, likely granuloma."],
           imp=["old granulomatous disease", "calcified granuloma", "sequela of prior granulomatous disease",
                "stable granulomatous disease"]),
    EM: _S({EM}, acute=False, chronic_words=True,
           np=["emphysema", "{sev} emphysema", "emphysematous changes", "changes of COPD",
               "hyperinflated lungs consistent with emphysema", "{sev} upper lobe predominant emphysema",
               "bullous emphysema in the apices", "{sev} centrilobular emphysema"],
           cl=["The lungs are hyperexpanded with flattened hemidiaphragms, compatible with COPD.",
               "There are emphysematous changes.",
               "Hyperinflation with increased AP diameter consistent with emphysema.",
               "Lungs are hyperexpanded with upper lobe lucency, consistent with emphysema."],
           hedged=["Hyperexpanded lungs which may reflect COPD.",
                   "Hyperinflation, suggesting chronic obstructive pulmonary disease."],
           imp=["emphysema", "COPD without acute process", "emphysema without acute cardiopulmonary process",
                "changes of COPD"]),
    FX: _S({FX}, p_bilateral=0.0,
           acute=lambda f: f["age"] in ("acute", "nondisplaced", "age-indeterminate"),
           np=["{age} {side} rib fractures", "{age} fracture of the {side} {nth} rib",
               "{age} {side} clavicle fracture", "{age} compression fracture of a midthoracic vertebral body",
               "{age} fractures of the {side} {nth} and {nth2} ribs", "old healed {side} rib fractures",
               "{age} fracture of the {side} {nth} posterior rib",
               "healed fracture deformity of the {side} {nth} rib", "{age} fracture of the {side} clavicle",
               "{age} {side} posterior rib fractures with callus formation",
               "{age} fracture of the {side} proximal humerus"],
           cl=["There is a {age} fracture of the {side} {nth} posterior rib.",
               "{side} {nth} rib fracture is again seen.",
               "Deformity of the {side} {nth} rib consistent with {a_}{age} fracture."],
           hedged=["Possible nondisplaced fracture of the {side} {nth} rib.",
                   "Cortical irregularity of the {side} {nth} rib, possibly an old fracture."],
           imp=["{age} {side} rib fractures", "{age} fracture of the {side} {nth} rib"]),
}

# Support devices: (kind, noun phrases). One to three kinds per report.
DEVICES: dict[str, tuple[str, ...]] = {
    "pacemaker": ("{side1} chest wall pacemaker with leads in the right atrium and right ventricle",
                  "dual-chamber pacemaker in place", "{side1}-sided pacemaker with leads in expected position",
                  "cardiac pacemaker with intact leads",
                  "{side1} chest wall defibrillator with lead terminating in the right ventricle",
                  "AICD with leads in satisfactory position",
                  ("cardiac pacemaker generator overlying the {side1} upper chest with leads in the right "
                  "atrium and ventricle"), "pacer generator with leads terminating in the right ventricle",
                  "biventricular ICD with leads in expected position"),
    "sternotomy": ("median sternotomy wires", "postoperative changes of median sternotomy and CABG",
                   "intact sternotomy wires", "sternotomy wires and mediastinal surgical clips",
                   "changes of prior CABG with sternotomy wires", "CABG markers and sternotomy wires",
                   "prosthetic mitral valve and sternotomy wires"),
    "clips": ("surgical clips in the right upper quadrant", "{side1} axillary surgical clips",
              "cholecystectomy clips", "surgical clips in the {side1} hilum",
              "postsurgical clips in the upper abdomen", "vascular clips in the {side1} neck",
              "surgical clips in the {side1} breast", "surgical clips in the gastroesophageal junction region"),
    "central": ("{side1} internal jugular central venous catheter with tip in the {tip}",
                "{side1} PICC line with tip in the {tip}", "{side1} subclavian central line with tip in the {tip}",
                "{side1}-sided Port-A-Cath with catheter tip at the {tip}",
                "{side1} chest port with tip projecting over the {tip}",
                "dual-lumen dialysis catheter with tip in the right atrium",
                "{side1} central venous catheter with tip at the {tip}",
                "{side1} chest wall port catheter with tip in the {tip}",
                "{side1} IJ catheter terminating in the {tip}"),
    "tubes": ("endotracheal tube with tip {n} cm above the carina", "enteric tube coursing below the diaphragm",
              "nasogastric tube with tip in the stomach", "{side1} chest tube in place",
              "tracheostomy tube in standard position"),
    "other": ("overlying EKG leads", "prosthetic aortic valve", "thoracic spinal fusion hardware",
              "loop recorder in the left chest wall", "vascular stent in the {side1} brachiocephalic vein",
              "cervical spine fusion hardware", "coronary artery stent", "IVC filter",
              "telemetry leads overlying the chest"),
}
_DEVICE_KIND_W = {"pacemaker": 0.25, "sternotomy": 0.22, "clips": 0.18, "central": 0.18, "tubes": 0.07,
                  "other": 0.10}
_DEVICE_SENT = ("{NP}.", "{NP}.", "{NP} in unchanged position.", "Interval placement of {np}.",
                "Stable {np}.", "{NP} noted.", "{NP} again seen.")
_DEVICE_IMP = ("support devices as above", "lines and tubes as described", "stable support devices",
               "{np}")

# Abnormalities outside the 14 labels: (slot, findings templates, impression phrase or "").
INCIDENTALS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("bones", ("{sev} dextroscoliosis of the thoracic spine.", "{sev} levoscoliosis of the thoracic spine.",
               "S-shaped scoliosis of the thoracolumbar spine.", "Thoracic scoliosis, convex to the {side1}."),
     "scoliosis"),
    ("bones", ("Degenerative changes of the thoracic spine.",
               "{sev} multilevel degenerative disc disease of the thoracic spine.", "Thoracic spondylosis.",
               "Osteophytes of the thoracic spine.", "Degenerative changes in both shoulders.",
               "Flowing osteophytes of the thoracic spine consistent with DISH."),
     "degenerative changes of the spine"),
    ("heart", ("The thoracic aorta is tortuous.", "Tortuous, atherosclerotic aorta.",
               "Atherosclerotic calcification of the aortic arch.", "Aortic ectasia and calcification.",
               "Mild unfolding of the thoracic aorta.", "Calcified aortic knob."),
     "tortuous aorta"),
    ("lungs", ("The lungs are hyperinflated but clear.", "Mild hyperinflation of the lungs.",
               "Lungs are hyperexpanded.", "Flattening of the hemidiaphragms."),
     "hyperinflated lungs"),
    ("lungs", ("Biapical pleural thickening.", "{side1} apical scarring.", "Linear scarring {in_loc}.",
               "Chronic-appearing coarse interstitial markings.", "Biapical scarring, unchanged."),
     "scarring"),
    ("lungs", ("Low lung volumes.", "Lung volumes are low with bronchovascular crowding.",
               "Hypoinflated lungs."), "low lung volumes"),
    ("misc", ("Elevation of the {side1} hemidiaphragm.", "Eventration of the {side1} hemidiaphragm."),
     "elevated {side1} hemidiaphragm"),
    ("misc", ("Small hiatal hernia.", "Retrocardiac air-fluid level consistent with hiatal hernia.",
              "Moderate-sized hiatal hernia."), "hiatal hernia"),
    ("bones", ("The bones are osteopenic.", "Diffuse osteopenia."), ""),
    ("misc", ("Calcified mediastinal lymph nodes.", "Calcified {side1} hilar lymph nodes."), ""),
    ("bones", ("Pectus excavatum deformity.", "Mild thoracic kyphosis.", "Bilateral cervical ribs."), ""),
)

# Statements about normal organs: slot -> list of (text, labels that must be absent).
_PARENCHYMA = frozenset({LO, AT, PN, CO, NM, ED})
NORMALS: dict[str, list[tuple[str, frozenset]]] = {
    "cardiomediastinal": [(t, frozenset({CM})) for t in (
        "The cardiomediastinal silhouette is within normal limits.",
        "Cardiomediastinal silhouette is normal in size and contour.", "Normal cardiomediastinal silhouette.",
        "The cardiomediastinal contours are unremarkable.", "Heart size and mediastinal contours are normal.",
        "The heart and mediastinum are unremarkable.", "Cardiac and mediastinal contours are within normal limits.",
        "Stable cardiomediastinal silhouette.", "Heart and mediastinum normal.",
        "Normal heart size and mediastinal contours.", ("The heart size and cardiomediastinal silhouette are "
        "within normal limits."))] + [
        ("Cardiomediastinal silhouette and pulmonary vasculature are within normal limits.", frozenset({CM, ED})),
        ("Heart size and pulmonary vascularity are within normal limits.", frozenset({CM, ED}))],
    "heart": [(t, frozenset({CM})) for t in (
        "The heart is normal in size.", "Heart size is normal.", "Heart size within normal limits.",
        "Normal heart size.", "The heart size is within normal limits.", "Heart size normal.",
        "Cardiac silhouette is normal in size.", "The heart is not enlarged.", "No cardiomegaly.",
        "Heart size is upper limits of normal.", "Stable normal heart size.", "Normal cardiac contour.")],
    "mediastinum": [(t, frozenset()) for t in (
        "Mediastinal contours are normal.", "The mediastinum is unremarkable.", "Normal mediastinal contour.",
        "Hilar and mediastinal contours are unremarkable.", "The trachea is midline.")],
    "vasculature": [(t, frozenset({ED})) for t in (
        "Pulmonary vascularity is within normal limits.", "Normal pulmonary vasculature.",
        "The pulmonary vasculature is unremarkable.", "No pulmonary edema.", "No vascular congestion.",
        "No typical findings of pulmonary edema.", "No evidence of CHF.")],
    "lungs": [(t, _PARENCHYMA) for t in (
        "The lungs are clear.", "Lungs are clear bilaterally.", "Both lungs are clear.",
        "Lungs are well expanded and clear.", "The lungs are clear without focal consolidation.", "Clear lungs.",
        "Lungs clear.", "The lungs are clear of focal airspace disease.", "Lungs are free of focal infiltrates.",
        "Well-expanded, clear lungs.", "The lungs are expanded and clear.")],
    "airspace": [("No focal consolidation.", frozenset({CO})),
                 ("No focal airspace disease.", frozenset({LO, CO})),
                 ("No focal airspace consolidation.", frozenset({LO, CO})),
                 ("No focal infiltrate.", frozenset({LO})),
                 ("No evidence of pneumonia.", frozenset({PN})),
                 ("No focal airspace opacity to suggest pneumonia.", frozenset({LO, PN})),
                 ("Negative for focal airspace disease or consolidation.", frozenset({LO, CO})),
                 ("There is no focal air space opacity.", frozenset({LO})),
                 ("No definite consolidation.", frozenset({CO})),
                 ("No focal alveolar consolidation.", frozenset({CO})),
                 ("No focal alveolar consolidation, no definite pleural effusion seen.", frozenset({CO, EF}))],
    "pleura": [("No pneumothorax or pleural effusion.", frozenset({PX, EF})),
               ("No pleural effusion or pneumothorax.", frozenset({PX, EF})),
               ("There is no pleural effusion or pneumothorax.", frozenset({PX, EF})),
               ("No pneumothorax or large pleural effusion.", frozenset({PX, EF})),
               ("No pleural effusions or pneumothoraces.", frozenset({PX, EF})),
               ("Negative for pneumothorax or pleural effusion.", frozenset({PX, EF})),
               ("No effusion or pneumothorax.", frozenset({PX, EF})),
               ("No pneumothorax.", frozenset({PX})), ("No visible pneumothorax.", frozenset({PX})),
               ("No pleural effusion.", frozenset({EF})), ("No large pleural effusion.", frozenset({EF})),
               ("No definite pleural effusion.", frozenset({EF})),
               ("The costophrenic angles are sharp.", frozenset({EF})),
               ("Costophrenic angles are clear.", frozenset({EF}))],
    "bones": [(t, frozenset({FX})) for t in (
        "No acute bony abnormality.", "No acute osseous abnormality.",
        "The visualized osseous structures are unremarkable.", "Visualized osseous structures are intact.",
        "Bony structures are grossly intact.", "No acute fracture.", "No displaced rib fractures.",
        "No acute osseous findings.", "The bony structures are intact.", "No acute bony findings.")],
    "misc": [(t, frozenset()) for t in (
        "No free air under the diaphragm.", "Soft tissues are unremarkable.", "No pneumomediastinum.",
        "No hilar adenopathy.")] + [("No suspicious pulmonary nodules.", frozenset({NM})),
                                    ("No discrete nodules or masses.", frozenset({NM}))],
}
# Noun phrases for negation lists ("No A, B, or C."): (phrase, labels that must be absent).
NEG_ITEMS: list[tuple[str, frozenset]] = [
    ("focal consolidation", frozenset({CO})), ("consolidation", frozenset({CO})),
    ("focal airspace disease", frozenset({LO, CO})), ("infiltrate", frozenset({LO})),
    ("focal opacity", frozenset({LO})), ("pleural effusion", frozenset({EF})), ("effusion", frozenset({EF})),
    ("large pleural effusion", frozenset({EF})), ("pneumothorax", frozenset({PX})),
    ("pulmonary edema", frozenset({ED})), ("edema", frozenset({ED})), ("pneumonia", frozenset({PN})),
    ("nodules or masses", frozenset({NM})), ("adenopathy", frozenset()),
]
_NEG_NEEDS = dict(NEG_ITEMS)
NEG_FRAMES = ("No {x}.", "No evidence of {x}.", "There is no {x}.", "Negative for {x}.",
              "Without evidence of {x}.", "No radiographic evidence of {x}.")
LUNG_NEG_FRAMES = ("The lungs are clear without {x}.", "Lungs are clear without evidence of {x}.",
                   "Lungs are expanded and clear of {x}.", "The lungs are free of {x}.")
_OTHERWISE = ("The lungs are otherwise clear.", "Otherwise, the lungs are clear.", "Lungs otherwise clear.",
              "Elsewhere the lungs are clear.", "The lungs are otherwise grossly clear.")
_BONES_NOT_FRACTURE = ("No other acute bony abnormality.",)

NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary abnormality.", "No acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary disease.", "No acute cardiopulmonary findings.", "No acute disease.",
    "No active disease.", "No acute cardiopulmonary process.", "Normal chest x-ray.", "Negative chest.",
    "No acute intrathoracic abnormality.", "No acute findings.", "No evidence of active disease.",
    "No radiographic evidence of acute cardiopulmonary process.", "No acute pulmonary disease.",
    "No acute radiographic cardiopulmonary process.", "Normal chest.", "Negative for acute abnormality.",
    "No acute cardiopulmonary abnormality identified.", "Clear lungs. No acute process.",
)
NO_ACUTE_IMPRESSIONS = (
    "No acute cardiopulmonary abnormality.", "No acute cardiopulmonary disease.", "No acute findings.",
    "No acute cardiopulmonary process.", "No active disease.", "No acute abnormality.",
    "No acute cardiopulmonary findings.", "No acute intrathoracic process.",
)
TECHNIQUE = ("PA and lateral views of the chest.", "Frontal and lateral views of the chest were obtained.",
             "AP and lateral views of the chest.", "PA and lateral chest radiographs.",
             "Two views of the chest.")
PORTABLE = ("AP portable view of the chest.", "Single portable AP view of the chest.")
COMPARISON = ("Comparison: XXXX.", "Comparison is made with the prior study dated XXXX.",
              "No prior studies for comparison.", "Comparison XXXX, XXXX.", "Comparison to prior exam of XXXX.",
              "Compared with chest x-ray of XXXX.")
TEMPORAL_CHRONIC = ("Stable {np}.", "Unchanged {np}.", "Again noted is {np}.", "{NP}, unchanged from prior.",
                    "{NP}, stable since XXXX.")
TEMPORAL_ACUTE = ("New {np}.", "Interval development of {np}.", "Persistent {np}.", "{NP}, new since prior exam.",
                  "Improving {np}.")
GENERIC_HEDGES = ("Possible {np}.", "Probable {np}.", "Questionable {np}.", "{NP} cannot be excluded.",
                  "Cannot exclude {np}.", "Findings may represent {np}.", "Findings suspicious for {np}.",
                  "{NP} is not excluded.", "Suggestion of {np}.", "Likely {np}.")
NOTIFY = ("Dr. XXXX was notified of these findings at XXXX on XXXX.",
          "These findings were discussed with Dr. XXXX at the time of interpretation.",
          "Findings called to the ordering provider via the critical result notification system.")
_NOTIFY_LABELS = frozenset({PX, NM, PN, FX})

_SLOT_ORDER = ("technique", "heart", "cardiomediastinal", "mediastinum", "vasculature", "lungs", "airspace",
               "pleura", "neglist", "bones", "devices", "misc")


# -------------------------------------------------------------------------------- rendering

@dataclass
class _Mention:
    labels: frozenset
    slot: str
    sentences: list[str]
    impression: str
    acute: bool


@dataclass
class _Params:
    hedge_rate: float
    typo_rate: float
    abbreviation_rate: float
    deid_rate: float
    incidental_rate: float
    impression_only_rate: float


_SLOT_OF = {CM: "heart", ED: "vasculature", EF: "pleura", PX: "pleura", FX: "bones", SD: "devices",
            LO: "lungs", AT: "lungs", PN: "lungs", CO: "lungs", NM: "lungs", GR: "lungs", EM: "lungs"}


def _pick_option(rng: random.Random, options: Sequence[str], present: set) -> str:
    """Options may end in '|Label,Label' = only when those labels are absent."""
    ok = []
    for o in options:
        if "|" in o:
            text, need = o.split("|", 1)
            if any(n in present for n in need.split(",")):
                continue
            ok.append(text)
        else:
            ok.append(o)
    return rng.choice(ok)


def _render_spec(rng: random.Random, spec: Spec, present: set, absorbed: frozenset,
                 p: _Params) -> _Mention:
    f = _fields(rng, spec.zones, spec.p_bilateral)
    f["eff"] = _EFF_TAIL.format_map(f) if EF in absorbed else ""
    f["co"] = rng.choice([" with focal consolidation", " and consolidation"]) if CO in absorbed else ""
    labels = spec.labels | absorbed
    hedge = rng.random() < p.hedge_rate
    if hedge and (spec.hedged or (spec.np and not absorbed)):
        if spec.hedged and (not spec.np or absorbed or rng.random() < 0.6):
            sent = _fmt(rng.choice(spec.hedged), f)
        else:
            np_ = _clean(rng.choice(spec.np).format_map(f))
            sent = _sentence(rng.choice(GENERIC_HEDGES).format(np=np_, NP=_cap(np_)))
    else:
        use_np = spec.np and not absorbed and (not spec.cl or rng.random() < 0.55)
        if use_np:
            np_ = _clean(rng.choice(spec.np).format_map(f))
            r = rng.random()
            if r < 0.2:
                pool = TEMPORAL_CHRONIC if spec.chronic_words else TEMPORAL_ACUTE
                sent = _sentence(rng.choice(pool).format(np=np_, NP=_cap(np_)))
            else:
                sent = _sentence(np_)
        else:
            sent = _fmt(rng.choice(spec.cl), f)
    imp = _clean(_pick_option(rng, spec.imp, present).format_map(f)) if spec.imp else ""
    acute = spec.acute(f) if callable(spec.acute) else spec.acute
    slot = _SLOT_OF[min(labels, key=lambda n: FINDING_LABELS.index(n))]
    return _Mention(labels, slot, [sent], imp, bool(acute))


def _render_devices(rng: random.Random) -> _Mention:
    f = _fields(rng)
    k = 1 + (rng.random() < 0.3) + (rng.random() < 0.1)
    kinds = list(_DEVICE_KIND_W)
    chosen: list[str] = []
    while len(chosen) < k:
        kind = rng.choices(kinds, weights=[_DEVICE_KIND_W[x] for x in kinds])[0]
        if kind not in chosen:
            chosen.append(kind)
    nps = [_clean(rng.choice(DEVICES[kind]).format_map(f)) for kind in chosen]
    if len(nps) > 1 and rng.random() < 0.4:
        sents = [_sentence(", ".join(nps[:-1]) + " and " + nps[-1])]
    else:
        sents = [_sentence(rng.choice(_DEVICE_SENT).format(np=x, NP=_cap(x))) for x in nps]
    imp_t = rng.choice(_DEVICE_IMP)
    imp = _clean(imp_t.format(np=nps[0]))
    acute = any(kind in ("central", "tubes") for kind in chosen)
    return _Mention(frozenset({SD}), "devices", sents, imp, acute and rng.random() < 0.5)


def _render_incidental(rng: random.Random, present: set, n: int) -> list[_Mention]:
    pool = [x for x in INCIDENTALS if not (x[2] == "hyperinflated lungs" and EM in present)]
    out = []
    for slot, templates, imp in rng.sample(pool, min(n, len(pool))):
        f = _fields(rng, p_bilateral=0.0)
        out.append(_Mention(frozenset(), slot, [_fmt(rng.choice(templates), f)],
                            _clean(imp.format_map(f)), False))
    return out


@functools.lru_cache(maxsize=4096)
def _normal_candidates(present: frozenset, bone_incidental: bool, lungs_taken: bool
                       ) -> tuple[tuple[str, list[str]], ...]:
    cands = []
    for slot, items in NORMALS.items():
        ok = [t for t, need in items if not (need & present)]
        if slot == "bones" and bone_incidental:
            ok = [t for t in ok if "acute" in t]
        if slot == "lungs" and lungs_taken:
            ok = []
        if ok:
            cands.append((slot, ok))
    return tuple(cands)


def _normal_statements(rng: random.Random, present: set, n: int, bone_incidental: bool,
                       lungs_taken: bool) -> list[tuple[str, str]]:
    """Up to `n` (slot, sentence) statements about organs without findings and absent findings."""
    cands = dict(_normal_candidates(frozenset(present), bone_incidental, lungs_taken))
    if present & _PARENCHYMA and not lungs_taken and rng.random() < 0.5:
        cands["lungs"] = [rng.choice(_OTHERWISE)]
    if FX in present and rng.random() < 0.3:
        cands["bones"] = list(_BONES_NOT_FRACTURE)
    # a combined negation list, replacing the airspace and pleura slots
    neg_ok = [x for x, need in NEG_ITEMS if not (need & present)]
    if len(neg_ok) >= 2 and rng.random() < 0.45:
        k = rng.randint(2, min(4, len(neg_ok)))
        items, seen_labels = [], set()
        for x in rng.sample(neg_ok, len(neg_ok)):
            need = _NEG_NEEDS[x] or frozenset({x})
            if not (need & seen_labels):
                items.append(x)
                seen_labels |= need
            if len(items) == k:
                break
        joined = items[0] if len(items) == 1 else (
            ", ".join(items[:-1]) + rng.choice([", or ", " or ", ", "]) + items[-1])
        frames = NEG_FRAMES + (LUNG_NEG_FRAMES if "lungs" in cands and not (present & _PARENCHYMA) else ())
        frame = rng.choice(frames)
        cands["neglist"] = [frame.format(x=joined)]
        cands.pop("airspace", None)
        cands.pop("pleura", None)
        if frame in LUNG_NEG_FRAMES:
            cands.pop("lungs", None)
    if "cardiomediastinal" in cands and rng.random() < 0.6:
        cands.pop("heart", None)
        cands.pop("mediastinum", None) if rng.random() < 0.7 else None
    elif "heart" in cands or CM in present:
        cands.pop("cardiomediastinal", None)
    else:
        cands.pop("heart", None)
    priority = {"cardiomediastinal": 3, "heart": 3, "lungs": 3, "pleura": 3, "neglist": 3, "airspace": 2,
                "bones": 1.5, "vasculature": 1.2, "mediastinum": 1, "misc": 0.4}
    slots = list(cands)
    keys = {s: rng.random() ** (1.0 / priority.get(s, 1)) for s in slots}  # weighted sampling order
    chosen = sorted(slots, key=lambda s: -keys[s])[:n]
    return [(s, _sentence(rng.choice(cands[s]))) for s in chosen]


@functools.lru_cache(maxsize=20000)
def _protected(w: str) -> bool:
    return "XXXX" in w or bool(_PROTECTED.search(w.strip(".,;:")))


def _corrupt_word(rng: random.Random, w: str) -> str:
    core = re.match(r"^([A-Za-z]+)(.*)$", w)
    if not core or len(core.group(1)) < 4:
        return w
    a, rest = core.group(1), core.group(2)
    i = rng.randrange(1, len(a) - 1)
    op = rng.random()
    if op < 0.35:
        a = a[:i] + a[i + 1] + a[i] + a[i + 2:]
    elif op < 0.65:
        a = a[:i] + a[i + 1:]
    elif op < 0.85:
        a = a[:i] + a[i] + a[i:]
    else:
        a = a[:i] + rng.choice("aeiourstn") + a[i + 1:]
    return w if _PROTECTED.search(a) else a + rest  # a typo must not create a finding word


def _postprocess(rng: random.Random, text: str, p: _Params) -> str:
    if p.abbreviation_rate > 0:
        text = _ABBREV.sub(lambda m: _ABBREV_MAP[m.group(0).lower()] if rng.random() < p.abbreviation_rate
                           else m.group(0), text)
    if p.deid_rate > 0:
        q = min(1.0, 8 * p.deid_rate)
        text = _DEID.sub(lambda m: _DEID_MAP[m.group(0)] if rng.random() < q else m.group(0), text)
        text = text.replace("x-ray", "x-XXXX") if rng.random() < 0.9 else text
    if p.typo_rate <= 0 and p.deid_rate <= 0:
        return text
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) < 4 or _protected(w):
            continue
        r = rng.random()
        if r < p.typo_rate:
            words[i] = _corrupt_word(rng, w)
        elif r < p.typo_rate + p.deid_rate * 0.5 and w[-1] not in ".,;:" and w.isalpha() and w.islower():
            words[i] = "XXXX"
    return " ".join(words)


def _join_section(rng: random.Random, sents: list[str]) -> str:
    out = " ".join(sents)
    r = rng.random()
    if r < 0.03:
        out = out.replace(". ", ".. ", 1)
    elif r < 0.06:
        out = out[:-1] + " ." if out.endswith(".") else out
    elif r < 0.10:
        out = out.rstrip(".")
    return out


def _impression(rng: random.Random, mentions: list[_Mention], present: set) -> str:
    acute = [m for m in mentions if m.labels and m.acute]
    chronic = [m for m in mentions if m.labels and not m.acute]
    incid = [m for m in mentions if not m.labels]
    items: list[str] = []
    for m in acute:
        if m.impression and rng.random() < 0.9:
            items.append(m.impression)
    chronic_items = [m.impression for m in chronic if m.impression and rng.random() < 0.45]
    chronic_items += [m.impression for m in incid if m.impression and rng.random() < 0.15]
    if not items:
        if not chronic_items or rng.random() < 0.7:
            no_acute = rng.choice(NO_ACUTE_IMPRESSIONS).rstrip(".")
            items = [no_acute] + chronic_items if rng.random() < 0.75 else chronic_items + [no_acute]
        else:
            items = chronic_items
    else:
        items += chronic_items
        if rng.random() < 0.25:
            items.append(rng.choice(["Otherwise no acute cardiopulmonary abnormality",
                                     "No other acute abnormality", "Otherwise no acute process"]))
    if present & _NOTIFY_LABELS and rng.random() < 0.15:
        items.append(rng.choice(NOTIFY).rstrip("."))
    items = [_cap(_clean(x)).rstrip(".") for x in items]
    if len(items) >= 2 and rng.random() < 0.35 or len(items) == 1 and rng.random() < 0.12:
        return " ".join(f"{i}. {x}." for i, x in enumerate(items, 1))
    return " ".join(x + "." for x in items)


def render_report(rng: random.Random, labels: Iterable[str], scenario: str, p: _Params,
                  n_incidental: int = 0) -> str:
    """Report text for a set of present finding labels (empty = normal unless n_incidental > 0)."""
    present = set(labels) - {NF}
    remaining = set(present)
    mentions: list[_Mention] = []
    for spec in JOINT_SPECS:
        if spec.labels <= remaining and rng.random() < spec.prob:
            absorbed = frozenset(x for x in spec.absorbs if x in remaining and rng.random() < 0.7)
            mentions.append(_render_spec(rng, spec, present, absorbed, p))
            remaining -= spec.labels | absorbed
    for lab in FINDING_LABELS:
        if lab in remaining:
            mentions.append(_render_devices(rng) if lab == SD else
                            _render_spec(rng, SINGLE_SPECS[lab], present, frozenset(), p))
    mentions += _render_incidental(rng, present, n_incidental)

    style = rng.choices(["terse", "standard", "verbose"], weights=[0.3, 0.5, 0.2])[0]
    n_normal = {"terse": rng.randint(1, 3), "standard": rng.randint(3, 5), "verbose": rng.randint(4, 7)}[style]
    bone_inc = any(m.slot == "bones" and not m.labels for m in mentions)
    lungs_taken = any(m.slot == "lungs" and not m.labels and "clear" in m.sentences[0] for m in mentions)
    normals = _normal_statements(rng, present, n_normal, bone_inc, lungs_taken)

    slot_pos = {s: i for i, s in enumerate(_SLOT_ORDER)}
    body: list[tuple[float, str]] = []
    for slot, sent in normals:
        body.append((slot_pos[slot] + rng.gauss(0, 0.8), sent))
    for m in mentions:
        base = slot_pos.get(m.slot, 6)
        if m.labels and rng.random() < 0.3:
            base = -0.5  # abnormal finding first
        for sent in m.sentences:
            body.append((base + rng.gauss(0, 1.2), sent))
    if rng.random() < 0.25:
        rng.shuffle(body)
    else:
        body.sort(key=lambda x: x[0])
    sents = [s for _, s in body]
    head: list[str] = []
    inpatient = scenario in ("inpatient-lines", "chf")
    if rng.random() < (0.35 if inpatient else 0.12):
        head.append(rng.choice(PORTABLE if inpatient and rng.random() < 0.6 else TECHNIQUE))
    if rng.random() < 0.12:
        head.append(rng.choice(COMPARISON))

    impression = _impression(rng, mentions, present)
    r = rng.random()
    if r < p.impression_only_rate:  # impression-only report: the impression reads like findings
        tail = []
        if not any(m.acute for m in mentions) and rng.random() < 0.5:
            tail = [rng.choice(NO_ACUTE_IMPRESSIONS if mentions else NORMAL_IMPRESSIONS)]
        findings, imp = "", _join_section(rng, head[-1:] * (rng.random() < 0.3) + sents + tail)
    elif r < p.impression_only_rate + 0.02 and mentions:  # minimal findings, everything in impression
        findings, imp = _join_section(rng, head[:1] or [rng.choice(TECHNIQUE)]), _join_section(rng, sents)
    else:
        if not mentions:
            impression = rng.choice(NORMAL_IMPRESSIONS)
            if rng.random() < 0.12:
                impression = "1. " + impression
        findings, imp = _join_section(rng, head + sents), _join_section(rng, [impression])
    findings = _postprocess(rng, findings, p) if findings else ""
    imp = _postprocess(rng, imp, p)
    return f"FINDINGS: {findings}\nIMPRESSION: {imp}" if findings else f"IMPRESSION: {imp}"


# -------------------------------------------------------------------------------- generator

class RadiologyReportGenerator:
    """Synthetic chest X-ray reports with labels known by construction (see the module docstring for
    the sampling model and the labelling policy).

    Parameters
    ----------
    seed: everything `generate` returns is a function of the seed (and what `fit` learned).
    prevalence: label -> marginal prevalence overriding the default (or fitted) one; names are
        normalised through the label space. "No Finding" sets the share of normal reports; a finding
        label's prevalence must not exceed 1 - p(No Finding).
    typo_rate: per-word probability of a typo (never in finding or negation words).
    hedge_rate: probability that a finding is stated with a hedge (still labelled positive).
    abbreviation_rate: per-opportunity probability of an abbreviation ("CP angles", "PTX", "w/").
    deid_rate: rate of de-identification artefacts (``XXXX``).
    incidental_rate: probability that a report with labelled findings also mentions a non-label
        abnormality (reports with no label that are not normal always have one).
    impression_only_rate: share of reports with an IMPRESSION section only.
    scenarios: the latent clinical scenarios (default `DEFAULT_SCENARIOS`).
    """

    def __init__(self, seed: int = 0, prevalence: dict[str, float] | None = None, typo_rate: float = 0.02,
                 hedge_rate: float = 0.15, abbreviation_rate: float = 0.04, deid_rate: float = 0.05,
                 incidental_rate: float = 0.3, impression_only_rate: float = 0.13,
                 scenarios: Sequence[Scenario] | None = None):
        self.seed = seed
        self.prevalence = prevalence
        self.typo_rate = typo_rate
        self.hedge_rate = hedge_rate
        self.abbreviation_rate = abbreviation_rate
        self.deid_rate = deid_rate
        self.incidental_rate = incidental_rate
        self.impression_only_rate = impression_only_rate
        self.scenarios = scenarios

    # -- model --------------------------------------------------------------------------------
    def _scenarios(self) -> tuple[Scenario, ...]:
        return tuple(self.scenarios) if self.scenarios is not None else DEFAULT_SCENARIOS

    def fit(self, records: Sequence[Record], n_iter: int = 100, prior_strength: float = 5.0
            ) -> RadiologyReportGenerator:
        """Learn label prevalence, pairwise co-occurrence and the scenario mixture (EM for a Bernoulli
        mixture initialised from the scenarios, with a pseudo-count prior of `prior_strength` toward
        them) from labelled records. Unlabelled records (labels None) are skipped; unknown label names
        are ignored. When no record carries "No Finding", records with no label count as normal."""
        rows = []
        for r in records:
            if r.labels is None:
                continue
            names = {RADIOLOGY_LABELS.normalise(x) for x in r.labels} - {None}
            rows.append(names)
        if not rows:
            raise ValueError("fit() needs at least one labelled record")
        uses_nf = any(NF in s for s in rows)
        is_normal = np.array([(NF in s) if uses_nf else not s for s in rows])
        X = np.array([[n in s for n in LABELS] for s in rows], dtype=float)
        X[:, 0] = is_normal
        X[is_normal, 1:] = 0.0  # No Finding is exclusive
        self.n_records_ = len(rows)
        self.prevalence_ = {n: float(X[:, i].mean()) for i, n in enumerate(LABELS)}
        self.cooccurrence_ = (X.T @ X) / len(rows)  # P(a and b), label-space order
        self.label_names_ = list(LABELS)

        scen = self._scenarios()
        w0 = np.array([s.weight for s in scen], dtype=float)
        w0 /= w0.sum()
        p0 = np.stack([s.vector() for s in scen])
        A = X[~is_normal, 1:]
        w, p = w0.copy(), p0.copy()
        if len(A):
            for _ in range(n_iter):
                lp = np.clip(p, 1e-6, 1 - 1e-6)
                ll = A @ np.log(lp).T + (1 - A) @ np.log1p(-lp).T + np.log(w)
                ll -= ll.max(axis=1, keepdims=True)
                resp = np.exp(ll)
                resp /= resp.sum(axis=1, keepdims=True)
                nk = resp.sum(axis=0)
                w_new = (nk + prior_strength * len(scen) * w0) / (len(A) + prior_strength * len(scen))
                p_new = (resp.T @ A + prior_strength * p0) / (nk[:, None] + prior_strength)
                done = np.abs(p_new - p).max() < 1e-6 and np.abs(w_new - w).max() < 1e-8
                w, p = w_new, p_new
                if done:
                    break
        self.scenario_weights_ = w
        self.scenario_probs_ = p
        return self

    def _model(self) -> tuple[float, np.ndarray, np.ndarray, dict[str, float]]:
        """(p_normal, scenario weights, calibrated per-scenario label probabilities, targets)."""
        scen = self._scenarios()
        if hasattr(self, "scenario_probs_"):
            weights, probs = self.scenario_weights_, self.scenario_probs_
            target = dict(self.prevalence_)
        else:
            weights = np.array([s.weight for s in scen], dtype=float)
            probs = np.stack([s.vector() for s in scen])
            target = dict(DEFAULT_PREVALENCE)
        weights = weights / weights.sum()
        for k, v in (self.prevalence or {}).items():
            name = RADIOLOGY_LABELS.normalise(k)
            if name is None:
                raise ValueError(f"unknown label in prevalence: {k!r}")
            v = float(v)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"prevalence of {name!r} must be in [0, 1], got {v}")
            target[name] = v
        p_nf = target[NF]
        for n in FINDING_LABELS:
            if target[n] > 1 - p_nf + 1e-9:
                raise ValueError(f"prevalence of {n!r} ({target[n]}) exceeds 1 - p(No Finding) ({1 - p_nf})")
        if p_nf < 1:
            cond = np.array([target[n] / (1 - p_nf) for n in FINDING_LABELS])
            probs = _calibrate(weights, probs, cond)
        return p_nf, weights, probs, target

    def expected_prevalence(self) -> dict[str, float]:
        """The marginal prevalence `generate` samples from (defaults or fitted, with overrides)."""
        return dict(self._model()[3])

    # -- sampling -----------------------------------------------------------------------------
    def generate(self, n: int, indices: Iterable[int] | None = None) -> list[Record]:
        """`n` reports; the same seed (and fit) gives the same reports, and generate(m) is a prefix
        of generate(n) for m < n. Report i depends only on (seed, fit, i): `indices` makes just
        those reports of `generate(n)` (how several processes split one set between them)."""
        p_nf, weights, probs, _ = self._model()
        scen = self._scenarios()
        names = [s.name for s in scen] if len(scen) == len(weights) else [f"s{i}" for i in range(len(weights))]
        incid = [s.incidental for s in scen] if len(scen) == len(weights) else [0.3] * len(weights)
        cum_w = np.cumsum(weights).tolist()
        probs_l = probs.tolist()
        params = _Params(self.hedge_rate, self.typo_rate, self.abbreviation_rate, self.deid_rate,
                         self.incidental_rate, self.impression_only_rate)
        out: list[Record] = []
        for i in (range(n) if indices is None else indices):
            if not 0 <= i < n:
                raise ValueError(f"report index {i} is outside 0..{n - 1}")
            rng = random.Random(f"{GENERATOR_NAME}:{self.seed}:{i}")
            if rng.random() < p_nf:
                labels, scenario, n_inc = [NF], "normal", 0
            else:
                u = rng.random() * cum_w[-1]
                k = next((j for j, c in enumerate(cum_w) if u < c), len(cum_w) - 1)
                scenario = names[k]
                present = {lab for lab, q in zip(FINDING_LABELS, probs_l[k]) if rng.random() < q}
                labels = [lab for lab in LABELS if lab in present]
                if not present:
                    n_inc = 1 + (rng.random() < 0.3)
                else:
                    p_inc = min(1.0, self.incidental_rate * (0.5 + incid[k]))
                    n_inc = (rng.random() < p_inc) + (rng.random() < p_inc * 0.3)
            text = render_report(rng, labels, scenario, params, n_incidental=n_inc)
            out.append(Record(id=f"synth-rad-{i + 1:06d}", text=text, labels=labels,
                              meta={"generator": GENERATOR_NAME, "seed": self.seed, "scenario": scenario}))
        return out

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("seed", "prevalence", "typo_rate", "hedge_rate",
                                              "abbreviation_rate", "deid_rate", "incidental_rate",
                                              "impression_only_rate", "scenarios")}


__all__ = ["DEFAULT_PREVALENCE", "DEFAULT_SCENARIOS", "LABELS", "RadiologyReportGenerator", "Scenario"]
