"""Synthetic rare-disease patients sampled from the HPO disease annotations (phenotype.hpoa).

`HPOPatientGenerator(knowledge, seed).generate(disease_ids, n_per_disease)` gives `Case`s whose
`patient` has the shape of a published case (phenopacket-store) and whose `gold` is the disease
the patient was sampled from. Real and synthetic patients are the same `Patient` structure and go
through the same renderer (`tasks.rare_ddx_render.render_summary`); nothing here is real data.

One patient of disease D (every draw from `random.Random` seeded with `(seed, D, index)`, so a
disease's patients do not depend on which other diseases are generated: resume and parallel runs
give the same cases):

1. Sex: a disease whose features all belong to one sex -> that sex; Y-linked -> male; X-linked
   (HP:0001417 or below) -> male with `p_male_x_linked`; else 50/50. The sex is then reported as
   unknown (None) with `p_sex_unknown` (the features still follow the true sex).
2. Features present: each annotated term independently with its annotated frequency
   (`Disease.term_frequencies`: several rows pooled, a row without frequency counts as
   `default_frequency`). A term the patient's sex cannot have is never drawn, here or below: rows
   restricted to the other sex (the hpoa `sex` column), and terms in the other sex's branches of
   the HPO (`SEX_ONLY_BRANCHES`: male / female genitalia and reproductive physiology), because
   most genital annotations carry no sex.
3. Reported: a published case lists only some features. The length of the list is drawn per
   patient, 1 + negative binomial with mean `mean_observed - 1` and dispersion
   `observed_dispersion`; each place on it is a noise place (step 5) with `noise_share` (at least
   one place is the disease's), and the other places are filled with present terms, uniformly at
   random. With fewer present terms than places, all are reported and the noise places are cut by
   the same factor, so noise stays `noise_share` of the terms of sparsely annotated diseases too.
   `mean_observed=None` reports every present term (and Binomial(present, noise_share) noise
   terms). At least one term is always observed: with none present, the most frequent annotated
   term (for the patient's sex) is taken.
4. Imprecision: each reported term is, with `p_imprecise`, replaced by an ancestor 1 or 2 levels up
   (2 with probability 1/2), never Phenotypic abnormality (HP:0000118) or its direct children (the
   organ-system level); with `p_specific`, by a direct child (a more specific term than the
   annotation, as real cases also report). Without a permitted ancestor / child the term stays.
5. Noise: the noise places of step 3 get unrelated findings, drawn from the "common findings"
   pool: terms at least two levels below Phenotypic abnormality, weighted by how many diseases are
   annotated with exactly that term (so Intellectual disability, Seizure, Short stature come up
   most), never a term annotated to D or an ancestor / descendant of one.
6. Excluded: with `p_excluded` the patient has excluded terms, 1 + negative binomial (mean
   `mean_excluded - 1`, dispersion `excluded_dispersion`) of them, each (`p_excluded_own`) one of
   D's own annotated terms the patient does not have (a typical feature looked for and absent) or
   else a common finding from the pool of step 5. Own terms run out for sparsely annotated
   diseases: then the others are cut by the same factor (`keep_own_share`), so excluded terms stay
   mostly the disease's own, as in real cases, at the price of fewer of them. Never excluded: a
   term that is an ancestor or descendant of a present or observed term, or one the sex cannot have.
7. Onset and age: an onset class is drawn uniformly from D's onset annotations (`Disease.onsets`),
   else from `generic_onset`, and an onset age uniformly in that class's range (`ONSET_RANGES`).
   The onset is given as the HPO term with `p_onset_term`, as an age with `p_onset_age`, else not
   at all (prenatal onsets only as a term). Age at examination = onset age + an exponential gap with
   mean `mean_years_to_exam` (at most 90 years), given with `p_age`.

Defaults, and where each number comes from. "Measured" = counted on the 6,878 dev cases of
phenopacket-store (../shared/data/phenopacket-store/phenopacket-store.dev.zip) for their shape only
(counts and shares, never which diseases or features appear):

* `default_frequency=0.5`: hpo.DEFAULT_FREQUENCY; 38% of OMIM phenotype rows give no frequency.
* `mean_observed=8.8`, `observed_dispersion=1.8`: measured observed terms per case mean 8.78,
  variance 41.2 (median 7, p10 2, p90 17); 1 + NB with that mean and variance.
* `p_excluded=0.85`, `mean_excluded=14.9`, `excluded_dispersion=0.5`: measured 85% of cases have
  an excluded term; among them mean 14.9, variance 411 (median 8, p10 2, p90 35).
* `p_excluded_own=0.70`: measured 70% of the excluded terms of cases whose gold disease is
  annotated are annotated to it (a typical feature this patient lacks).
* `p_imprecise=0.04`, `p_specific=0.06`, `noise_share=0.22`: measured, of the observed terms of
  real cases whose gold disease is annotated, 70% are annotated to it, 3.6% are an ancestor of an
  annotated term, 3.3% a descendant and 23% none of these (noise, or a feature the annotations
  miss). These defaults give that mix on synthetic patients (`shape_table`); `p_specific` is above
  3.3% because a child of an annotated term is often annotated itself, or the term has no child.
* `p_sex_unknown=0.08`: measured 8.0% of cases have no sex (48.4% male, 43.6% female).
* `p_male_x_linked=0.78`: measured 160 male / 44 female among cases of X-linked diseases.
* `p_age=0.735`: measured 73.5% of cases give an age.
* `p_onset_term=0.31`, `p_onset_age=0.26`: measured onset given as an HPO term 31%, as an age 26%,
  neither 43%.
* `mean_years_to_exam=10`: measured age minus onset age (1,636 cases with both): p10 0, p25 2,
  median 7, p75 15, p90 25 years; an exponential with mean 10 has p25 2.9, median 6.9, p90 23.
* `generic_onset` (`GENERIC_ONSET`, for the 47% of OMIM diseases without onset annotation):
  measured onset classes of the dev cases (the term, or the class of the onset age).

How the result compares (`shape_table`, 300 random OMIM diseases x 2 patients, seed 0): counts of
terms are lower than in real cases because a random OMIM disease has far fewer annotations (median
11 terms) than the diseases of phenopacket-store, whose cases come from well-studied diseases; for
diseases with at least 30 annotated terms the counts match. The LIRICAL-style ranker
(`baselines.phenotype_ranker`) finds synthetic patients about as hard as real ones overall, and
somewhat easier at a matched annotation richness. Top-1 / top-10 (real: of the cases whose gold
disease is an OMIM candidate, 82% of them; `main()` prints these):

    300 random diseases x 2, defaults             synthetic 0.49 / 0.77   real 0.46 / 0.68
    300 diseases with >= 30 terms x 2, defaults   synthetic 0.66 / 0.85   real (gold >= 30 terms) 0.53 / 0.78
    the same with noise_share=0.35                synthetic 0.51 / 0.75   (random diseases: 0.39 / 0.67)

The default noise share stays the measured 0.22: a noisier default would make patients of random
diseases harder than real ones, and noise is not shown to be what the gap at matched richness is
(imprecision, for one, barely moves the ranker: p_imprecise 0.15 left top-1 unchanged).

`shape_by_richness` makes the comparison bin by bin of the gold disease's annotation richness (the
rare-ddx report prints it). Reweighted to the real cases' mix of bins, synthetic patients have as
many observed terms as real ones, fewer excluded ones; real cases of sparsely annotated diseases carry
more findings their disease is not annotated with, and real cases of the richest diseases match the
annotations more closely, likely because those annotations were curated from those very cases. The
generator keeps one set of defaults for every disease rather than copy these per-bin shapes.

Patient ids are `synth-` + 12 hex digits of a hash of (seed, disease, index): they do not name the
disease and are never model input (the renderer reads no id), but someone with the seed and the
disease list could recompute them, so they are opaque, not secret.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import statistics
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

from ..knowledge.hpo import DEFAULT_FREQUENCY, PHENOTYPIC_ABNORMALITY, HPOKnowledge, load_hpo
from ..patients import Case, Patient

__all__ = ["GENERATOR_NAME", "GENERIC_ONSET", "HPOPatientGenerator", "ONSET_RANGES", "SEX_ONLY_BRANCHES",
           "RICHNESS_EDGES", "SHAPE_LABELS", "patient_shape", "richness_labels", "shape_by_richness",
           "shape_table"]

GENERATOR_NAME = "hpo-patients"
X_LINKED = "HP:0001417"
Y_LINKED = "HP:0001450"

# HPO branches one sex never has. Most annotations of genital findings carry no `sex` (1,744 OMIM
# rows under the male branches do not, 218 do), so the ontology decides: a female patient never
# gets Cryptorchidism, however it is annotated.
SEX_ONLY_BRANCHES: dict[str, tuple[str, ...]] = {
    "MALE": ("HP:0010461",   # Abnormality of the male genitalia
             "HP:0012874",   # Abnormal male reproductive system physiology
             "HP:0012041",   # Decreased fertility in males
             "HP:0008185",   # Precocious puberty in males
             "HP:0033019",   # Male reproductive system neoplasm
             "HP:0012863"),  # Abnormal male germ cell morphology
    "FEMALE": ("HP:0010460",   # Abnormality of the female genitalia
               "HP:0030012",   # Abnormal female reproductive system physiology
               "HP:0000868",   # Decreased fertility in females
               "HP:0010465",   # Precocious puberty in females
               "HP:0033020",   # Female reproductive system neoplasm
               "HP:0008647",   # Pubertal developmental failure in females
               "HP:0033338"),  # Abnormal female meiosis
}

_YEAR = 365.25
# HPO onset term -> (first day, last day) of the onset age drawn for it; negative = before birth
ONSET_RANGES: dict[str, tuple[float, float]] = {
    "HP:0030674": (-280, -1),                   # Antenatal onset
    "HP:0011460": (-280, -200),                 # Embryonal onset
    "HP:0011461": (-200, -1),                   # Fetal onset
    "HP:0034199": (-200, -180),                 # Late first trimester onset
    "HP:0034198": (-180, -90),                  # Second trimester onset
    "HP:0034197": (-90, -1),                    # Third trimester onset
    "HP:0003577": (0, 0),                       # Congenital onset
    "HP:0003623": (0, 27),                      # Neonatal onset
    "HP:0003593": (28, _YEAR - 1),              # Infantile onset
    "HP:0410280": (0, 16 * _YEAR - 1),          # Pediatric onset
    "HP:0011463": (_YEAR, 5 * _YEAR - 1),       # Childhood onset
    "HP:0003621": (5 * _YEAR, 16 * _YEAR - 1),  # Juvenile onset
    "HP:0003581": (16 * _YEAR, 80 * _YEAR),     # Adult onset
    "HP:0011462": (16 * _YEAR, 40 * _YEAR - 1), # Young adult onset
    "HP:0025708": (16 * _YEAR, 19 * _YEAR - 1), # Early young adult onset
    "HP:0025709": (19 * _YEAR, 25 * _YEAR - 1), # Intermediate young adult onset
    "HP:0025710": (25 * _YEAR, 40 * _YEAR - 1), # Late young adult onset
    "HP:0003596": (40 * _YEAR, 60 * _YEAR - 1), # Middle age onset
    "HP:0003584": (60 * _YEAR, 80 * _YEAR),     # Late onset
    "HP:4000040": (18 * _YEAR, 40 * _YEAR),     # Puerpural onset
    "HP:6000314": (45 * _YEAR, 55 * _YEAR),     # Perimenopausal onset
    "HP:6000315": (55 * _YEAR, 70 * _YEAR),     # Postmenopausal onset
}

# onset classes of the dev cases (onset term, or the class of the onset age), rounded shares
GENERIC_ONSET: dict[str, float] = {
    "HP:0030674": 0.04,   # Antenatal (incl. fetal and trimester terms)
    "HP:0003577": 0.20,   # Congenital
    "HP:0003623": 0.13,   # Neonatal
    "HP:0003593": 0.26,   # Infantile
    "HP:0011463": 0.15,   # Childhood
    "HP:0003621": 0.09,   # Juvenile
    "HP:0011462": 0.08,   # Young adult
    "HP:0003596": 0.045,  # Middle age
    "HP:0003584": 0.015,  # Late
}

MAX_AGE_DAYS = 90 * _YEAR


@dataclass(frozen=True)
class _DiseaseView:
    """What the generator needs of one disease for one sex, computed once and reused."""

    sex: str
    terms: tuple[str, ...]                 # annotated terms allowed for the sex, sorted
    freqs: tuple[float, ...]               # their pooled frequencies
    all_terms: frozenset[str]              # every annotated term, for either sex
    above: frozenset[str]                  # all_terms and all their ancestors


class HPOPatientGenerator:
    """Samples phenotype-only patients of annotated diseases (see the module docstring for the
    process and where each default comes from).

    `generate(disease_ids, n_per_disease)` -> list of `Case`; `iter_cases(...)` the same lazily;
    `patient_case(disease_id, index)` one case; `usable_diseases()` the diseases it can generate.
    Same `seed` and options -> same cases."""

    def __init__(self, knowledge: HPOKnowledge | None = None, seed: int = 0, *,
                 default_frequency: float = DEFAULT_FREQUENCY, pseudo_count: float = 0.0,
                 mean_observed: float | None = 8.8, observed_dispersion: float = 1.8,
                 p_imprecise: float = 0.04, p_specific: float = 0.06,
                 noise_share: float = 0.22,
                 p_excluded: float = 0.85, mean_excluded: float = 14.9, excluded_dispersion: float = 0.5,
                 max_excluded: int = 80, p_excluded_own: float = 0.70, keep_own_share: bool = True,
                 p_sex_unknown: float = 0.08, p_male_x_linked: float = 0.78,
                 p_age: float = 0.735, p_onset_term: float = 0.31, p_onset_age: float = 0.26,
                 mean_years_to_exam: float = 10.0, generic_onset: Mapping[str, float] | None = None,
                 id_prefix: str = "synth"):
        """`knowledge`: the HPO (default `load_hpo()`); `seed`: with the disease id and the patient's
        index, seeds each patient's random draws.

        Features: `default_frequency` for rows without frequency; `pseudo_count` shrinks n/m
        fractions towards it (`Disease.term_frequencies`); `mean_observed` (None: every present
        term) and `observed_dispersion`: the number of observed terms; `p_imprecise` (an ancestor
        1-2 levels up) and `p_specific` (a child) per reported term; `noise_share`: the share of
        observed terms that are unrelated common findings.
        Excluded: `p_excluded` (any), `mean_excluded` / `excluded_dispersion` (how many, given any,
        at most `max_excluded`), `p_excluded_own` (share drawn from the disease's own absent terms).
        Demographics: `p_sex_unknown`, `p_male_x_linked`, `p_age`, `p_onset_term`, `p_onset_age`,
        `mean_years_to_exam`, `generic_onset` ({onset term: weight} for diseases without onset
        annotation; default `GENERIC_ONSET`). `id_prefix`: patient ids are `<prefix>-<12 hex>`."""
        self.knowledge = knowledge if knowledge is not None else load_hpo()
        self.seed = seed
        self.default_frequency = default_frequency
        self.pseudo_count = pseudo_count
        self.mean_observed = mean_observed
        self.observed_dispersion = observed_dispersion
        self.p_imprecise = p_imprecise
        self.p_specific = p_specific
        self.noise_share = noise_share
        self.p_excluded = p_excluded
        self.mean_excluded = mean_excluded
        self.excluded_dispersion = excluded_dispersion
        self.max_excluded = max_excluded
        self.p_excluded_own = p_excluded_own
        self.keep_own_share = keep_own_share
        self.p_sex_unknown = p_sex_unknown
        self.p_male_x_linked = p_male_x_linked
        self.p_age = p_age
        self.p_onset_term = p_onset_term
        self.p_onset_age = p_onset_age
        self.mean_years_to_exam = mean_years_to_exam
        self.generic_onset = dict(GENERIC_ONSET if generic_onset is None else generic_onset)
        self.id_prefix = id_prefix
        self._check()
        ont = self.knowledge.ontology
        if PHENOTYPIC_ABNORMALITY not in ont:
            raise ValueError(f"the ontology has no {PHENOTYPIC_ABNORMALITY} (Phenotypic abnormality)")
        # the organ-system level: imprecision never climbs to it, noise never draws from it
        self._too_general = frozenset({PHENOTYPIC_ABNORMALITY, *ont.children(PHENOTYPIC_ABNORMALITY)})
        self._views: dict[tuple[str, str], _DiseaseView] = {}
        # per sex, the branches of the other sex (those in this ontology)
        self._other_sex_branches = {
            sex: frozenset(b for b in SEX_ONLY_BRANCHES[other] if b in ont)
            for sex, other in (("MALE", "FEMALE"), ("FEMALE", "MALE"))}

    def _check(self) -> None:
        probs = ("p_imprecise", "p_specific", "p_excluded", "p_excluded_own", "p_sex_unknown",
                 "p_male_x_linked", "p_age", "p_onset_term", "p_onset_age")
        for name in probs:
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.p_imprecise + self.p_specific > 1.0:
            raise ValueError("p_imprecise + p_specific must be at most 1")
        if self.p_onset_term + self.p_onset_age > 1.0:
            raise ValueError("p_onset_term + p_onset_age must be at most 1")
        if not 0.0 < self.default_frequency <= 1.0:
            raise ValueError(f"default_frequency must be in (0, 1], got {self.default_frequency}")
        if self.mean_observed is not None and self.mean_observed < 1:
            raise ValueError(f"mean_observed must be at least 1 (or None), got {self.mean_observed}")
        if self.mean_excluded < 1:
            raise ValueError(f"mean_excluded must be at least 1, got {self.mean_excluded}")
        if self.observed_dispersion <= 0 or self.excluded_dispersion <= 0:
            raise ValueError("observed_dispersion and excluded_dispersion must be > 0")
        if not 0.0 <= self.noise_share < 1.0:
            raise ValueError(f"noise_share must be in [0, 1), got {self.noise_share}")
        if self.max_excluded < 1:
            raise ValueError(f"max_excluded must be at least 1, got {self.max_excluded}")
        if self.mean_years_to_exam < 0:
            raise ValueError(f"mean_years_to_exam must be >= 0, got {self.mean_years_to_exam}")
        unknown = [t for t in self.generic_onset if t not in ONSET_RANGES]
        if unknown or not self.generic_onset or min(self.generic_onset.values()) < 0 \
                or sum(self.generic_onset.values()) <= 0:
            raise ValueError(f"generic_onset must map onset terms of ONSET_RANGES to weights >= 0 "
                             f"with a positive sum (unknown: {unknown})")

    # ------------------------------------------------------------ public API

    def generate(self, disease_ids: Iterable[str], n_per_disease: int) -> list[Case]:
        """`n_per_disease` cases of each disease, in the order given (patients 0..n-1 of each)."""
        return list(self.iter_cases(disease_ids, n_per_disease))

    def iter_cases(self, disease_ids: Iterable[str], n_per_disease: int, start: int = 0) -> Iterator[Case]:
        """Lazily, patients `start` .. `start + n_per_disease - 1` of each disease (a later call with
        a higher `start` adds new patients without repeating any). Every disease id is checked
        before the first case is made."""
        if n_per_disease < 0 or start < 0:
            raise ValueError("n_per_disease and start must be >= 0")
        ids = list(dict.fromkeys(disease_ids))
        for d in ids:
            self._require(d)
        for d in ids:
            for i in range(start, start + n_per_disease):
                yield self.patient_case(d, i)

    def usable_diseases(self, disease_ids: Iterable[str] | None = None) -> list[str]:
        """The diseases of `disease_ids` (default: every annotated one, `knowledge.disease_ids`) that
        patients can be generated for: known, with a phenotype annotation of frequency above 0 (in
        the 2025-01-16 release, all 8,352 annotated OMIM diseases but OMIM:617596). Order kept."""
        ids = self.knowledge.disease_ids if disease_ids is None else list(dict.fromkeys(disease_ids))
        return [d for d in ids if d in self.knowledge.diseases
                and any(f > 0 for sex in ("FEMALE", "MALE") for f in self._view(d, sex).freqs)]

    def patient_case(self, disease_id: str, index: int) -> Case:
        """Patient number `index` of `disease_id`: depends only on (seed, options, disease, index)."""
        disease = self._require(disease_id)
        rng = random.Random(f"hpo-patients|{self.seed}|{disease_id}|{index}")
        sex = self._sex(disease_id, rng)
        view = self._view(disease_id, sex)
        present = [t for t, f in zip(view.terms, view.freqs) if rng.random() < f]
        if not present:
            # every case has a finding: the most frequent one (max keeps the first of ties; sorted terms)
            present = [view.terms[max(range(len(view.terms)), key=view.freqs.__getitem__)]]
        reported, n_noise = self._reported(present, rng)
        observed = [self._blur(t, sex, rng) for t in reported]
        noise = self._common_findings(rng, n_noise, view, conflicts=set(present) | set(observed))
        observed = list(dict.fromkeys(observed + noise))
        rng.shuffle(observed)
        excluded = self._excluded(rng, view, known=set(present) | set(observed))
        onset_term, onset_days = self._onset(disease, rng)
        onset = onset_age = age = None
        u = rng.random()
        if u < self.p_onset_term:
            onset = onset_term
        elif u < self.p_onset_term + self.p_onset_age and onset_days >= 0:
            onset_age = _iso_age(onset_days, rng)
        if rng.random() < self.p_age:
            years = rng.expovariate(1.0 / self.mean_years_to_exam) if self.mean_years_to_exam > 0 else 0.0
            age = _iso_age(min(max(onset_days, 0.0) + years * _YEAR, MAX_AGE_DAYS), rng)
        reported_sex = None if rng.random() < self.p_sex_unknown else sex
        pid = hashlib.sha256(f"{self.seed}|{disease_id}|{index}".encode()).hexdigest()[:12]
        patient = Patient(id=f"{self.id_prefix}-{pid}", sex=reported_sex, age=age, observed=tuple(observed),
                          excluded=tuple(excluded), onset=onset, onset_age=onset_age, pmids=())
        return Case(patient=patient, gold=(disease_id,), gold_labels=(disease.name,), source=GENERATOR_NAME)

    # ------------------------------------------------------------ the steps

    def _require(self, disease_id: str):
        d = self.knowledge.diseases.get(disease_id)
        if d is None:
            raise KeyError(f"unknown disease {disease_id!r}")
        if not any(f > 0 for sex in ("FEMALE", "MALE") for f in self._view(disease_id, sex).freqs):
            raise ValueError(f"disease {disease_id} has no phenotype annotation with a frequency above 0")
        return d

    def _reported(self, present: list[str], rng: random.Random) -> tuple[list[str], int]:
        """(the present terms a report lists, how many noise terms it adds): step 3."""
        if self.mean_observed is None:
            return list(present), _binomial(rng, len(present), self.noise_share)
        places = 1 + _neg_binomial(rng, self.mean_observed - 1, self.observed_dispersion)
        n_noise = min(_binomial(rng, places, self.noise_share), places - 1)
        n_disease = places - n_noise
        if n_disease <= len(present):
            return rng.sample(present, n_disease), n_noise
        # too few present terms for the places: report them all, cut the noise in proportion
        return list(present), round(n_noise * len(present) / n_disease)

    def _sex(self, disease_id: str, rng: random.Random) -> str:
        ont = self.knowledge.ontology
        # a disease whose features all belong to one sex (rows restricted to it, or terms in its
        # branches, e.g. male infertility): that sex
        viable = [s for s in ("FEMALE", "MALE") if any(f > 0 for f in self._view(disease_id, s).freqs)]
        if len(viable) == 1:
            return viable[0]
        inheritance = {a.hpo_id for a in self.knowledge.diseases[disease_id].inheritance}
        if any(Y_LINKED in ont.ancestors(t) for t in inheritance if t in ont):
            return "MALE"
        if any(X_LINKED in ont.ancestors(t) for t in inheritance if t in ont):
            return "MALE" if rng.random() < self.p_male_x_linked else "FEMALE"
        return "MALE" if rng.random() < 0.5 else "FEMALE"

    def _view(self, disease_id: str, sex: str) -> _DiseaseView:
        key = (disease_id, sex)
        view = self._views.get(key)
        if view is None:
            ont = self.knowledge.ontology
            tf = self.knowledge.diseases[disease_id].term_frequencies(
                self.default_frequency, sex=sex, pseudo_count=self.pseudo_count)
            # terms of frequency 0 (HPO "Excluded") stay: never present, but candidates for excluded
            terms = tuple(sorted(t for t in tf if self._sex_allows(t, sex)))
            # every annotated term, the other sex's too: noise is none of them, nor related to one
            every = frozenset(a.hpo_id for a in self.knowledge.diseases[disease_id].phenotypes)
            above = frozenset().union(*(ont.ancestors(t) for t in every))
            view = _DiseaseView(sex, terms, tuple(tf[t] for t in terms), every, above)
            self._views[key] = view
        return view

    def _sex_allows(self, term: str, sex: str) -> bool:
        """False for a term in a branch of the other sex (`SEX_ONLY_BRANCHES`)."""
        return not (self.knowledge.ontology.ancestors(term) & self._other_sex_branches[sex])

    def _blur(self, term: str, sex: str, rng: random.Random) -> str:
        """`term`, or with p_imprecise an ancestor 1-2 levels up, with p_specific a child (one the
        patient's sex can have)."""
        ont = self.knowledge.ontology
        u = rng.random()
        if u < self.p_imprecise:
            steps = 1 if rng.random() < 0.5 else 2
            out = term
            for _ in range(steps):
                parents = sorted(p for p in ont.parents(out) if p not in self._too_general
                                 and PHENOTYPIC_ABNORMALITY in ont.ancestors(p))
                if not parents:
                    break
                out = rng.choice(parents)
            return out
        if u < self.p_imprecise + self.p_specific:
            children = [c for c in ont.children(term) if self._sex_allows(c, sex)]  # sorted
            return rng.choice(children) if children else term
        return term

    def _common_findings(self, rng: random.Random, n: int, disease: _DiseaseView, conflicts: set[str]
                         ) -> list[str]:
        """`n` distinct terms of the common-findings pool that the patient's sex can have, none
        annotated to `disease` nor an ancestor or descendant of one, none an ancestor or descendant
        of a term in `conflicts` or of each other. Fewer if rejection sampling does not find them."""
        if n <= 0:
            return []
        ont = self.knowledge.ontology
        pool, cum = self._pool
        out: list[str] = []
        taken = set(conflicts)
        for _ in range(50 * n):  # rejection sampling; the pool is thousands of terms
            if len(out) == n:
                break
            t = rng.choices(pool, cum_weights=cum, k=1)[0]
            if (t in disease.above or ont.ancestors(t) & disease.all_terms or self._conflicts(t, taken)
                    or not self._sex_allows(t, disease.sex)):
                continue
            out.append(t)
            taken.add(t)
        return out

    @functools.cached_property
    def _pool(self) -> tuple[list[str], list[float]]:
        """The common-findings pool: terms at least two levels below Phenotypic abnormality, with
        cumulative weights = the number of diseases annotated with exactly that term."""
        kn, ont = self.knowledge, self.knowledge.ontology
        counts: dict[str, int] = {}
        for d in kn.disease_ids:
            for t in {a.hpo_id for a in kn.diseases[d].phenotypes}:
                counts[t] = counts.get(t, 0) + 1
        pool = sorted(t for t in counts
                      if t not in self._too_general and PHENOTYPIC_ABNORMALITY in ont.ancestors(t))
        if not pool:
            raise ValueError("no annotated term below the organ-system level to draw common findings from")
        cum, total = [], 0.0
        for t in pool:
            total += counts[t]
            cum.append(total)
        return pool, cum

    def _conflicts(self, term: str, terms: set[str]) -> bool:
        """Whether `term` is one of `terms`, or an ancestor or a descendant of one of them."""
        ont = self.knowledge.ontology
        if ont.ancestors(term) & terms:
            return True
        return any(term in ont.ancestors(t) for t in terms)

    def _excluded(self, rng: random.Random, view: _DiseaseView, known: set[str]) -> list[str]:
        if rng.random() >= self.p_excluded:
            return []
        n = min(self.max_excluded, 1 + _neg_binomial(rng, self.mean_excluded - 1, self.excluded_dispersion))
        n_own = _binomial(rng, n, self.p_excluded_own)
        n_other = n - n_own
        # the disease's own terms this patient lacks (those of the other sex are not in the view)
        own = [t for t in view.terms if not self._conflicts(t, known)]
        if n_own > len(own) and self.keep_own_share:
            # too few own terms (a sparsely annotated disease): cut the others by the same factor,
            # so that excluded terms stay mostly the disease's own, as in real cases
            n_other = round(n_other * len(own) / n_own)
        own = rng.sample(own, min(n_own, len(own)))
        # own terms may be related to each other (A1 and A1a): fine, real cases do it too, but never
        # to what the patient has; others must also avoid the disease's annotations
        others = self._common_findings(rng, n_other, view, conflicts=known | set(own))
        excluded = own + others
        rng.shuffle(excluded)
        return excluded

    def _onset(self, disease, rng: random.Random) -> tuple[str, float]:
        """(onset term, onset age in days; negative before birth)."""
        terms = sorted({a.hpo_id for a in disease.onsets if a.hpo_id in ONSET_RANGES})
        if terms:
            term = rng.choice(terms)
        else:
            items = sorted(self.generic_onset.items())
            term = rng.choices([t for t, _ in items], weights=[w for _, w in items], k=1)[0]
        lo, hi = ONSET_RANGES[term]
        return term, rng.uniform(lo, hi)


def _neg_binomial(rng: random.Random, mean: float, dispersion: float) -> int:
    """A negative binomial draw with this mean and dispersion r (variance mean + mean^2 / r), as a
    gamma-Poisson mixture."""
    if mean <= 0:
        return 0
    lam = rng.gammavariate(dispersion, mean / dispersion)
    return _poisson(rng, lam)


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n)) if p > 0 else 0


def _poisson(rng: random.Random, lam: float) -> int:
    if lam < 30:  # Knuth's product of uniforms
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


def _iso_age(days: float, rng: random.Random) -> str:
    """An age as the ISO 8601 durations real cases use: days under 4 weeks, months under 2 years,
    else years (with months 15% of the time, as about 15% of real ages are `PnYnM`)."""
    days = max(days, 0.0)
    if days < 28:
        return f"P{int(days)}D"
    if days < 2 * _YEAR:
        return f"P{int(days // 30.4375)}M"
    years = int(days // _YEAR)
    months = int((days - years * _YEAR) // 30.4375)
    if months and rng.random() < 0.15:
        return f"P{years}Y{months}M"
    return f"P{years}Y"


# ---------------------------------------------------------------- shape comparison

def patient_shape(cases: Sequence[Case], knowledge: HPOKnowledge | None = None) -> dict[str, float]:
    """Shape statistics of a set of cases: counts of observed and excluded terms, shares with age,
    sex and onset; with `knowledge`, also the mean information content of observed terms and the
    share of observed / excluded terms annotated to the gold disease."""
    n = len(cases)
    if n == 0:
        return {"n": 0}
    obs = [len(c.patient.observed) for c in cases]
    exc = [len(c.patient.excluded) for c in cases]
    total_terms = sum(obs) + sum(exc)
    out: dict[str, float] = {
        "n": n,
        "observed_mean": statistics.fmean(obs),
        "observed_median": statistics.median(obs),
        "observed_p10": _quantile(obs, 0.10),
        "observed_p90": _quantile(obs, 0.90),
        "excluded_mean": statistics.fmean(exc),
        "excluded_median_if_any": statistics.median([e for e in exc if e]) if any(exc) else 0.0,
        "share_with_excluded": sum(e > 0 for e in exc) / n,
        "excluded_share_of_terms": sum(exc) / total_terms if total_terms else 0.0,
        "share_with_age": sum(c.patient.age is not None for c in cases) / n,
        "share_with_sex": sum(c.patient.sex is not None for c in cases) / n,
        "share_male": sum(c.patient.sex == "MALE" for c in cases) / n,
        "share_onset_term": sum(c.patient.onset is not None for c in cases) / n,
        "share_onset_age": sum(c.patient.onset is None and c.patient.onset_age is not None
                               for c in cases) / n,
    }
    if knowledge is not None:
        ont = knowledge.ontology
        ics, n_exc, own_exc = [], 0, 0
        rel = {"own": 0, "ancestor": 0, "descendant": 0, "other": 0}
        for c in cases:
            for t in c.patient.observed:
                r = ont.resolve(t)
                if r is not None:
                    ics.append(float(knowledge.ic[ont.index[r]]))
            ann = set()
            for g in c.gold or ():
                d = knowledge.diseases.get(g)
                if d is not None:
                    ann |= {a.hpo_id for a in d.phenotypes}
            if not ann:  # gold disease not in the knowledge: nothing to compare with
                continue
            above = set().union(*(ont.ancestors(a) for a in ann))
            for t in c.patient.observed:
                r = ont.resolve(t)
                if r in ann:
                    rel["own"] += 1
                elif r in above:
                    rel["ancestor"] += 1
                elif r is not None and ont.ancestors(r) & ann:
                    rel["descendant"] += 1
                else:
                    rel["other"] += 1
            n_exc += len(c.patient.excluded)
            own_exc += sum(ont.resolve(t) in ann for t in c.patient.excluded)
        out["observed_mean_ic"] = statistics.fmean(ics) if ics else 0.0
        n_obs = sum(rel.values())
        for k, v in rel.items():
            out[f"observed_{k}_share"] = v / n_obs if n_obs else 0.0
        out["excluded_own_share"] = own_exc / n_exc if n_exc else 0.0
    return out


RICHNESS_EDGES = (10, 20, 30, 60)
"""Bins of annotation richness (distinct HPO terms annotated to the gold disease): 1-9, 10-19,
20-29, 30-59, 60 or more."""

_RICHNESS_KEYS = ("observed_mean", "excluded_mean", "excluded_share_of_terms", "observed_other_share",
                  "excluded_own_share")


def richness_bin(n_terms: int, edges: Sequence[int] = RICHNESS_EDGES) -> str:
    """The label of the richness bin `n_terms` falls in ("1-9", ..., "60+")."""
    lo = 1
    for hi in edges:
        if n_terms < hi:
            return f"{lo}-{hi - 1}"
        lo = hi
    return f"{lo}+"


def richness_labels(edges: Sequence[int] = RICHNESS_EDGES) -> list[str]:
    """Every bin's label in order, "not annotated" last."""
    return [richness_bin(e, edges) for e in (1, *edges)] + ["not annotated"]


def shape_by_richness(cases: Sequence[Case], knowledge: HPOKnowledge,
                      edges: Sequence[int] = RICHNESS_EDGES) -> dict[str, dict[str, float]]:
    """`patient_shape` per bin of how richly the gold disease is annotated (its number of distinct
    annotated terms; the richest of several gold diseases), plus each bin's share of the cases.

    Why: a patient's counts of terms follow its disease's annotations, so two sets of cases from
    different mixes of diseases differ in their overall counts even where the generator matches real
    cases disease for disease. Cases whose gold disease is not annotated form the bin "not annotated"."""
    n_terms: dict[str, int] = {}

    def richness(case: Case) -> int:
        best = 0
        for g in case.gold or ():
            if g not in n_terms:
                d = knowledge.diseases.get(g)
                n_terms[g] = len(d.term_frequencies()) if d is not None else 0
            best = max(best, n_terms[g])
        return best

    groups: dict[str, list[Case]] = {label: [] for label in richness_labels(edges)}
    for c in cases:
        n = richness(c)
        groups[richness_bin(n, edges) if n else "not annotated"].append(c)
    out = {}
    for label, group in groups.items():
        if not group:
            continue
        shape = patient_shape(group, knowledge)
        keys = _RICHNESS_KEYS[:3] if label == "not annotated" else _RICHNESS_KEYS  # nothing to be own of
        out[label] = {"n": len(group), "share": len(group) / len(cases), **{k: shape[k] for k in keys}}
    return out


def _quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile, linear interpolation between order statistics (numpy's default)."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


SHAPE_LABELS = {
    "n": "cases",
    "observed_mean": "observed terms, mean",
    "observed_median": "observed terms, median",
    "observed_p10": "observed terms, p10",
    "observed_p90": "observed terms, p90",
    "excluded_mean": "excluded terms, mean",
    "excluded_median_if_any": "excluded terms, median (cases with any)",
    "share_with_excluded": "share of cases with excluded terms",
    "excluded_share_of_terms": "share of excluded among all terms",
    "share_with_age": "share with age",
    "share_with_sex": "share with sex",
    "share_male": "share male",
    "share_onset_term": "share with onset as HPO term",
    "share_onset_age": "share with onset as age only",
    "observed_mean_ic": "information content of observed terms, mean",
    "observed_own_share": "share of observed terms annotated to the gold disease (gold in the HPO)",
    "observed_ancestor_share": "... an ancestor of an annotated term",
    "observed_descendant_share": "... a descendant of an annotated term",
    "observed_other_share": "... none of these (noise, or a feature not annotated)",
    "excluded_own_share": "share of excluded terms annotated to the gold disease (gold in the HPO)",
}


def shape_table(synthetic_cases: Sequence[Case], real_cases: Sequence[Case],
                knowledge: HPOKnowledge | None = None) -> str:
    """A markdown table comparing `patient_shape` of synthetic and real cases, one row per
    statistic (`knowledge` adds the rows that need the HPO)."""
    syn, real = patient_shape(synthetic_cases, knowledge), patient_shape(real_cases, knowledge)
    lines = ["| statistic | synthetic | real |", "|---|---:|---:|"]
    for key, label in SHAPE_LABELS.items():
        if key in syn or key in real:
            lines.append(f"| {label} | {_fmt(syn.get(key))} | {_fmt(real.get(key))} |")
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


# ---------------------------------------------------------------- measurement

def main(argv: Sequence[str] | None = None) -> int:
    """Generate patients of random OMIM diseases and compare them with real cases: the shape table
    and, with `--ranker`, the phenotype ranker's top-k on both. Run it as (`python -m` would import
    this module twice, through `synthdx.synth`):

        nice -n 19 python -c 'from synthdx.synth.hpo_patients import main; main()' [--ranker]
            [--cases ZIP] [--diseases 300] [--per-disease 2] [--seed 0] [--min-terms 0]
            [--param noise_share=0.35 ...]
    """
    import argparse
    from pathlib import Path

    def param(text: str) -> tuple[str, float]:
        name, _, value = text.partition("=")
        return name, float(value)

    default_cases = (Path(__file__).resolve().parents[4] / "shared" / "data" / "phenopacket-store"
                     / "phenopacket-store.dev.zip")
    ap = argparse.ArgumentParser(description=main.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=Path, default=default_cases)
    ap.add_argument("--diseases", type=int, default=300, help="how many random OMIM diseases")
    ap.add_argument("--per-disease", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="draws the diseases and seeds the generator")
    ap.add_argument("--min-terms", type=int, default=0,
                    help="only diseases with at least this many annotated terms (in the ranking: real too)")
    ap.add_argument("--param", action="append", default=[], type=param,
                    help="a numeric generator option, e.g. noise_share=0.35 (repeatable)")
    ap.add_argument("--ranker", action="store_true", help="also rank both sets with the phenotype ranker")
    args = ap.parse_args(argv)

    from ..datasets.phenopackets import load_phenopackets

    kn = load_hpo()

    def n_terms(d: str) -> int:
        return len(kn.diseases[d].term_frequencies()) if d in kn.diseases else -1

    pool = [d for d in kn.disease_ids if n_terms(d) >= args.min_terms]
    diseases = random.Random(args.seed).sample(pool, min(args.diseases, len(pool)))
    generator = HPOPatientGenerator(kn, seed=args.seed, **dict(args.param))
    synthetic = generator.generate(diseases, args.per_disease)
    real = [c for c in load_phenopackets(args.cases) if c.gold]
    print(f"{len(diseases)} random OMIM diseases (of {len(pool)} with >= {args.min_terms} annotated terms) x "
          f"{args.per_disease}, seed {args.seed}, options {dict(args.param)}; real: {args.cases.name}\n")
    print(shape_table(synthetic, real, kn))
    if args.ranker:
        from ..baselines.phenotype_ranker import PhenotypeRanker

        ranker = PhenotypeRanker(kn).fit()
        if args.min_terms > 0:
            real = [c for c in real if max(n_terms(g) for g in c.gold) >= args.min_terms]
        print("\nranker top-k (of the cases whose gold disease is a candidate; of all cases in brackets)")
        for name, cases in (("synthetic", synthetic), (f"real, gold with >= {args.min_terms} terms", real)):
            scores = ranker.scores_many(c.patient for c in cases)
            ranks = [ranker.gold_rank(s, c.gold) for s, c in zip(scores, cases)]
            covered = [r for r in ranks if r != math.inf]
            cells = [f"top-{k} {sum(r <= k for r in covered) / len(covered):.3f} "
                     f"({sum(r <= k for r in ranks) / len(ranks):.3f})" for k in (1, 3, 10)]
            print(f"  {name}: {len(covered)} of {len(ranks)} covered; " + ", ".join(cells))
    return 0
