"""One renderer from a phenotype-only patient to a short clinical summary:

    "A 34-year-old woman presents with ectopia lentis, arachnodactyly and tall stature. Onset in
     childhood. No scoliosis or myopia was found."

Real cases (phenopackets) and synthetic patients go through this same function, so a model
trained on synthetic summaries never sees a difference in form between the two. It reads only
`sex`, `age`, `observed`, `excluded`, `onset` and `onset_age` of a `Patient` (never `id`,
`pmids` or anything else: the id of a published case can name the gene), and a `Patient` holds
no genetic data in the first place.

Terms are shown by their HPO names (the label from the source file when the term is newer than
this HPO release; a term with neither is left out). By default the feature order is shuffled and
a phrasing is drawn from a few synonymous templates, both from `random.Random` seeded with
`(seed, patient id)`: the same seed gives the same text, and source order (phenopacket-store lists
features by organ system) carries no signal. Redundant terms are dropped by default: an observed
term that is an ancestor of another observed term, an excluded term under another excluded term,
and an excluded term that is an ancestor of an observed one.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Sequence

from ..knowledge.hpo import HPOKnowledge, HPOntology, iso_duration_days, load_hpo
from ..patients import Case, Patient
from ..records import Record

__all__ = ["age_phrase", "case_to_record", "join_terms", "render_summary", "term_phrase"]

_PRESENTS = ("presents with", "was referred with", "is evaluated for", "has")
_NONE_FOUND = ("No {} was found.", "There was no {}.", "Examination found no {}.")

# HPO onset terms -> the clause that follows "Onset ..."
_ONSET = {
    "HP:0030674": "before birth",                  # Antenatal onset
    "HP:0011460": "in the embryonal period",       # Embryonal onset
    "HP:0011461": "in the fetal period",           # Fetal onset
    "HP:0034199": "in the first trimester",        # Late first trimester onset
    "HP:0034198": "in the second trimester",       # Second trimester onset
    "HP:0034197": "in the third trimester",        # Third trimester onset
    "HP:0003577": "at birth",                      # Congenital onset
    "HP:0003623": "in the neonatal period",        # Neonatal onset
    "HP:0003593": "in infancy",                    # Infantile onset
    "HP:0410280": "in childhood",                  # Pediatric onset
    "HP:0011463": "in early childhood",            # Childhood onset (1-5 y)
    "HP:0003621": "between 5 and 15 years of age", # Juvenile onset
    "HP:0003581": "in adulthood",                  # Adult onset
    "HP:0011462": "in young adulthood",            # Young adult onset
    "HP:0003596": "in middle age",                 # Middle age onset
    "HP:0003584": "late in life",                  # Late onset
}
_ONSET_SENTENCE = ("Onset {}.", "Symptoms began {}.")


def _ontology(knowledge: HPOKnowledge | HPOntology | None) -> HPOntology:
    if knowledge is None:
        return load_hpo().ontology
    return knowledge.ontology if isinstance(knowledge, HPOKnowledge) else knowledge


@functools.lru_cache(maxsize=4)
def _proper_words(ont: HPOntology) -> frozenset[str]:
    """Words written capitalised inside HPO names (eponyms: Chiari, Wilms, Dandy-Walker...), so a
    name that starts with one keeps its capital."""
    words = set()
    for t in ont.terms.values():
        for w in t.name.split()[1:]:
            w = w.strip("(),;:")
            if w[:1].isupper():
                words.add(w)
    return frozenset(words)


def term_phrase(name: str, ont: HPOntology | None = None) -> str:
    """An HPO name as it reads inside a sentence: first letter lowercased, unless the first word
    is an acronym (`EEG abnormality`), holds a digit or a second capital (`IgA`, `Dandy-Walker`),
    or is an eponym found capitalised elsewhere in the ontology (`Chiari`)."""
    first = name.split(" ", 1)[0]
    if (len(first) > 1 and any(c.isupper() for c in first[1:])) or any(c.isdigit() for c in first):
        return name
    if ont is not None and first.strip("(),;:") in _proper_words(ont):
        return name
    return name[:1].lower() + name[1:]


def join_terms(items: Sequence[str], conj: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conj} {items[-1]}"


def age_phrase(age: str | None, sex: str | None) -> str:
    """'34-year-old woman', '6-month-old girl', '10-day-old infant', 'female patient', 'patient'."""
    days = iso_duration_days(age) if age else None
    if days is None:
        return {"FEMALE": "female patient", "MALE": "male patient"}.get(sex or "", "patient")
    years = days / 365.25
    if days < 28:
        d = int(round(days))
        lead = "newborn" if d == 0 else f"{d}-day-old"
    elif years < 2:
        lead = f"{max(1, int(days // 30.4375))}-month-old"
    else:
        lead = f"{int(years)}-year-old"
    if years >= 18:
        noun = {"FEMALE": "woman", "MALE": "man"}.get(sex or "", "adult")
    elif years < 1 and sex not in ("FEMALE", "MALE"):
        noun = "infant"
    else:
        noun = {"FEMALE": "girl", "MALE": "boy"}.get(sex or "", "child")
    return f"{lead} {noun}"


def _article(phrase: str) -> str:
    return "An" if re.match(r"^(8|11|18|80|8\d)-|^[aeiou]", phrase) else "A"


def _onset_clause(patient: Patient, ont: HPOntology) -> str | None:
    if patient.onset:
        t = ont.resolve(patient.onset) or patient.onset
        if t in _ONSET:
            return _ONSET[t]
        name = ont.terms[t].name if t in ont.terms else None
        if name:
            return f"was {term_phrase(name, ont).replace(' onset', '')}"
    if patient.onset_age:
        days = iso_duration_days(patient.onset_age)
        if days is None:
            return None
        if days < 1:
            return "at birth"
        if days < 28:
            d = int(round(days))
            return f"at {d} day{'s' if d != 1 else ''} of age"
        if days < 2 * 365.25:
            m = max(1, int(days // 30.4375))
            return f"at {m} month{'s' if m != 1 else ''} of age"
        return f"at {int(days // 365.25)} years of age"
    return None


def _clean(patient: Patient, ont: HPOntology, drop_redundant: bool) -> tuple[list[str], list[str]]:
    obs = [ont.resolve(t) or t for t in patient.observed]
    exc = [ont.resolve(t) or t for t in patient.excluded]
    obs, exc = list(dict.fromkeys(obs)), list(dict.fromkeys(exc))
    if not drop_redundant:
        return obs, exc
    known_obs = [t for t in obs if t in ont.terms]
    obs_anc = set()
    for t in known_obs:
        obs_anc |= ont.ancestors(t, include_self=False)
    obs = [t for t in obs if t not in obs_anc]
    obs_set = set(obs)
    exc = [t for t in exc if t not in obs_anc and t not in obs_set]
    exc_set = set(exc)
    exc = [t for t in exc if t not in ont.terms or not (ont.ancestors(t, include_self=False) & exc_set)]
    return obs, exc


def _names(ids: list[str], patient: Patient, ont: HPOntology) -> list[str]:
    out = []
    for t in ids:
        name = ont.terms[t].name if t in ont.terms else patient.term_labels.get(t)
        if name:
            out.append(term_phrase(name, ont))
    return list(dict.fromkeys(out))


def render_summary(patient: Patient, knowledge: HPOKnowledge | HPOntology | None = None, seed: int | None = 0,
                   max_observed: int | None = None, max_excluded: int | None = None,
                   drop_redundant: bool = True) -> str:
    """The clinical summary of `patient` (see the module docstring). `seed=None` keeps the
    source order and the first template of each sentence. `max_observed` / `max_excluded` keep
    at most that many features (after shuffling)."""
    ont = _ontology(knowledge)
    rng = random.Random(f"{seed}|{patient.id}") if seed is not None else None
    obs_ids, exc_ids = _clean(patient, ont, drop_redundant)
    observed, excluded = _names(obs_ids, patient, ont), _names(exc_ids, patient, ont)
    if rng is not None:
        rng.shuffle(observed)
        rng.shuffle(excluded)
    if max_observed is not None:
        observed = observed[:max_observed]
    if max_excluded is not None:
        excluded = excluded[:max_excluded]

    def pick(options):
        return options[0] if rng is None else rng.choice(options)

    who = age_phrase(patient.age, patient.sex)
    subject = f"{_article(who)} {who}"
    if observed:
        sentences = [f"{subject} {pick(_PRESENTS)} {join_terms(observed)}."]
    else:
        sentences = [f"{subject} is evaluated; no abnormal feature was recorded."]
    onset = _onset_clause(patient, ont)
    if onset:
        sentences.append(pick(_ONSET_SENTENCE).format(onset))
    if excluded:
        sentences.append(pick(_NONE_FOUND).format(join_terms(excluded, "or")))
    return " ".join(sentences)


def case_to_record(case: Case, knowledge: HPOKnowledge | HPOntology | None = None, seed: int | None = 0,
                   **render_kwargs) -> Record:
    """A `Record` for the shared pipeline: text = the rendered summary, labels = the gold disease
    ids (None when unlabelled), meta = what evaluation needs (publication ids, term counts); the
    case's source path is left out (it names the gene in phenopacket-store)."""
    p = case.patient
    return Record(id=p.id, text=render_summary(p, knowledge, seed, **render_kwargs),
                  labels=None if case.gold is None else list(case.gold),
                  meta={"pmids": list(p.pmids), "n_observed": len(p.observed), "n_excluded": len(p.excluded),
                        "gold_labels": list(case.gold_labels)})
