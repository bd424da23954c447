"""A likelihood-ratio phenotype ranker over the HPO (in the spirit of LIRICAL and Phenomizer):
the knowledge-based baseline of rare-disease differential diagnosis.

For a patient and each candidate disease D the score is a sum of natural-log likelihood ratios,

    score(D) = sum over observed terms t  of log LR_obs(t | D)
             + sum over excluded terms t  of log LR_exc(t | D)
             + log LR_onset(D)                                    (when the patient's onset is known)

with f(a | D) the annotated frequency of term a in D (`HPOKnowledge`; `default_frequency` where
the annotation gives none) and two propagated quantities over the ontology:

    U(t | D)  = max f(a | D) over annotations a at t or below t (the disease implies t)
    bg(t)     = mean of U(t | D) over all annotated diseases (how common t is among diseases)

Observed term t, a mixture of "explained by D" and noise drawn from the background (`noise`):

    LR_obs = (1 - noise) * E + noise,   E = max of
        U(t | D) / bg(t)                          t or a more specific term is annotated to D
        f(s | D) / bg(s)      for ancestors s     D is annotated with a more general term s
        w * U(m | D) / bg(m)  for ancestors m     partial credit: D has a feature in the same branch
                              with IC(m) >= min_partial_ic   (w = `partial_weight`)
    (ancestors: those within Phenotypic abnormality)

Excluded term t (looked for, absent), with a false-negative rate fn (`false_negative`):

    LR_exc = (1 - (1 - fn) * U(t | D)) / (1 - (1 - fn) * bg(t))

Onset (optional): a disease with onset annotations compatible with the patient's onset class
(one is the other or an ancestor of it) gets (1 - onset_mismatch) / q, an incompatible one
onset_mismatch / (1 - q), where q is the share of onset-annotated diseases compatible with that
class ((count + 0.5) / (n + 1)); diseases without onset annotations get 1. Sex (optional):
annotations restricted to the other sex (the hpoa `sex` column) are ignored.

Observed terms that are ancestors of another observed term are dropped (`drop_redundant`), as
are excluded terms below another excluded term, and excluded terms that contradict an observed
one (an ancestor of it). Terms outside "Phenotypic abnormality" or unknown to this HPO release
are ignored.

Leaving knowledge out (`exclude_references`, e.g. the PMIDs of a case's own publication): the
rows of the diseases whose annotations cite those references are rebuilt without those
annotations (phenotypes and onsets); the background frequencies stay those of the full knowledge
(one publication moves them by well under 1%). `leave_out="any"` (default, strict) drops every
annotation that cites a left-out reference, even when it cites other publications too (half of
such rows in phenopacket-store's diseases do, and their pooled n/m includes the left-out
publication's patients); `leave_out="sole"` drops only annotations citing nothing else. The truth
of "what the ranker would know without this publication" lies between the two.

Prior (`prior`): "uniform" (default, as LIRICAL and Phenomizer) adds nothing; "publications" adds
log(1 + n(D)), n(D) the publications (PMIDs) D's phenotype annotations cite: a pretest probability
in proportion to how much has been published about D, the diseases that published cases come from.
With references left out, they are not counted either (so a case's own publication does not raise
its own disease's prior).

Speed: diseases x terms are sparse CSC matrices; one query term costs a few column reads and
vector maxima over all candidates, and its log-LR vector is cached (LRU), so a few thousand
cases against ~8,350 OMIM diseases take seconds to a minute.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
from scipy import sparse

from ..knowledge.hpo import (
    ONSET_ROOT,
    PHENOTYPIC_ABNORMALITY,
    HPOKnowledge,
    load_hpo,
    onset_class_of_age,
)
from ..patients import Patient

__all__ = ["PhenotypeRanker"]


@dataclass
class _Block:
    """Knowledge of a set of candidate diseases (rows), as matrices over all ontology terms."""

    F: sparse.csc_matrix        # (rows, T) annotated frequency
    U: sparse.csc_matrix        # (rows, T) propagated frequency (max over annotated terms at or below)
    onset: np.ndarray           # (rows, n_onset) bool: onset annotation compatible with onset class k
    has_onset: np.ndarray       # (rows,) bool
    rows: np.ndarray | None     # candidate indices of the rows; None = all candidates in order


class PhenotypeRanker:
    """Ranks candidate diseases for a phenotype-only `Patient` (see the module docstring).

    `fit()` builds the matrices (about 2 s, plus loading the HPO once per process) and returns
    self; `rank(patient, k)` gives [(disease id, name, score)], best first, ties broken by id."""

    def __init__(self, knowledge: HPOKnowledge | None = None, candidate_ids: Sequence[str] | None = None,
                 branch: str | None = None, default_frequency: float = 0.5, noise: float = 0.05,
                 partial_weight: float = 0.1, min_partial_ic: float = 2.5, false_negative: float = 0.9,
                 use_onset: bool = True, onset_mismatch: float = 0.25, use_sex: bool = False,
                 drop_redundant: bool = True, pseudo_count: float = 2.0, propagation: str = "max",
                 leave_out: str = "any", prior: str = "uniform", cache_size: int = 4096):
        self.knowledge = knowledge
        self.candidate_ids = candidate_ids
        self.branch = branch
        self.default_frequency = default_frequency
        self.noise = noise
        self.partial_weight = partial_weight
        self.min_partial_ic = min_partial_ic
        self.false_negative = false_negative
        self.use_onset = use_onset
        self.onset_mismatch = onset_mismatch
        self.use_sex = use_sex
        self.drop_redundant = drop_redundant
        self.pseudo_count = pseudo_count
        self.propagation = propagation
        self.leave_out = leave_out
        self.prior = prior
        self.cache_size = cache_size

    def get_params(self, deep: bool = False) -> dict:
        """The constructor arguments (scikit-learn convention)."""
        return {k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters if k != "self"}

    # ------------------------------------------------------------ fit

    def fit(self, X=None, y=None) -> "PhenotypeRanker":
        """Build the knowledge matrices. `X` and `y` are ignored (the ranker learns nothing from
        cases); they are accepted so it fits where an estimator is expected."""
        if not 0.0 < self.noise < 1.0:
            raise ValueError(f"noise must be in (0, 1), got {self.noise}")
        if not 0.0 <= self.false_negative < 1.0:
            raise ValueError(f"false_negative must be in [0, 1), got {self.false_negative}")
        if not 0.0 < self.onset_mismatch < 1.0:
            raise ValueError(f"onset_mismatch must be in (0, 1), got {self.onset_mismatch}")
        if self.leave_out not in ("any", "sole"):
            raise ValueError(f"leave_out must be 'any' or 'sole', got {self.leave_out!r}")
        if self.prior not in ("uniform", "publications"):
            raise ValueError(f"prior must be 'uniform' or 'publications', got {self.prior!r}")
        if self.propagation not in ("max", "noisy_or"):
            raise ValueError(f"propagation must be 'max' or 'noisy_or', got {self.propagation!r}")
        if not 0.0 < self.default_frequency <= 1.0:
            raise ValueError(f"default_frequency must be in (0, 1], got {self.default_frequency}")
        self._exclude_mode = "all" if self.leave_out == "sole" else "any"
        kn = self.knowledge if self.knowledge is not None else load_hpo()
        ont = kn.ontology
        self.knowledge_ = kn
        self.candidates_ = kn.candidates(self.candidate_ids, self.branch)
        if not self.candidates_:
            raise ValueError("no candidate diseases")
        self.candidate_names_ = [kn.diseases[d].name for d in self.candidates_]
        self._cand_index = {d: i for i, d in enumerate(self.candidates_)}

        A = ont.ancestor_matrix.tocsr()
        self._anc_indptr, self._anc_indices = A.indptr, A.indices
        self._pheno = np.zeros(len(ont), dtype=bool)
        if PHENOTYPIC_ABNORMALITY not in ont:
            raise ValueError(f"the ontology has no {PHENOTYPIC_ABNORMALITY} (Phenotypic abnormality)")
        self._pheno[[ont.index[t] for t in ont.descendants(PHENOTYPIC_ABNORMALITY)]] = True
        self.ic_ = np.asarray(kn.ic, dtype=np.float64)

        # onset classes: every term under Onset; compat[k, j]: class k and term j on one line
        self.onset_terms_ = (sorted(ont.descendants(ONSET_ROOT, include_self=False))
                             if ONSET_ROOT in ont else [])
        self._onset_index = {t: k for k, t in enumerate(self.onset_terms_)}
        n_on = len(self.onset_terms_)
        self._onset_compat = np.zeros((n_on, n_on), dtype=bool)
        for k, t in enumerate(self.onset_terms_):
            anc = ont.ancestors(t)
            for j, u in enumerate(self.onset_terms_):
                if u in anc or t in ont.ancestors(u):
                    self._onset_compat[k, j] = True

        # background over every annotated disease, so it does not change with the candidate panel
        all_diseases = [kn.diseases[d] for d in kn.disease_ids]
        _, U_all = self._matrices(all_diseases, sex=None, exclude=frozenset())
        n_all = len(all_diseases)
        bg = np.asarray(U_all.sum(axis=0)).ravel() / n_all
        self.background_ = np.maximum(bg, 0.5 / n_all)
        on_all = np.stack([self._onset_row(d, frozenset()) for d in all_diseases])
        has = on_all.any(axis=1)
        # share of onset-annotated diseases compatible with each class (add-half smoothed)
        self.onset_background_ = (on_all[has].sum(axis=0) + 0.5) / (has.sum() + 1.0)

        self._base = self._block(np.arange(len(self.candidates_)), sex=None, exclude=frozenset(), full=True)
        # which candidates an override touches: by reference, and by sex-restricted annotation
        self._by_ref: dict[str, set[int]] = defaultdict(set)
        self._sex_restricted: dict[str, set[int]] = {"MALE": set(), "FEMALE": set()}
        for i, d in enumerate(self.candidates_):
            dis = kn.diseases[d]
            for a in dis.phenotypes + dis.onsets:
                for r in a.references:
                    self._by_ref[r].add(i)
            for a in dis.phenotypes:
                if a.sex:
                    other = "FEMALE" if a.sex == "MALE" else "MALE"
                    self._sex_restricted[other].add(i)
        self._publications = [kn.diseases[d].publications for d in self.candidates_]
        self.log_prior_ = (np.log1p([len(p) for p in self._publications]) if self.prior == "publications"
                           else np.zeros(len(self.candidates_)))
        self._cache: OrderedDict = OrderedDict()
        self._blocks: OrderedDict = OrderedDict()
        return self

    def _matrices(self, diseases: Sequence, sex: str | None, exclude: frozenset
                  ) -> tuple[sparse.csc_matrix, sparse.csc_matrix]:
        ont = self.knowledge_.ontology
        T = len(ont)
        rows, cols, vals = [], [], []
        for i, dis in enumerate(diseases):
            for t, f in dis.term_frequencies(self.default_frequency, exclude, sex, self.pseudo_count,
                                             self._exclude_mode).items():
                j = ont.index[t]
                if f > 0 and self._pheno[j]:
                    rows.append(i)
                    cols.append(j)
                    vals.append(f)
        n = len(diseases)
        r = np.asarray(rows, dtype=np.int64)
        c = np.asarray(cols, dtype=np.int64)
        v = np.asarray(vals, dtype=np.float64)
        F = sparse.csc_matrix((v, (r, c)), shape=(n, T))
        # propagate each annotation to all its ancestors, keeping the max frequency per (row, term)
        starts = self._anc_indptr[c]
        counts = self._anc_indptr[c + 1] - starts
        total = int(counts.sum())
        offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
        anc = self._anc_indices[offsets].astype(np.int64)
        rr = np.repeat(r, counts)
        vv = np.repeat(v, counts)
        key = rr * T + anc
        order = np.lexsort((-vv, key))
        key, vv = key[order], vv[order]
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[1:] != key[:-1]
        if self.propagation == "max":
            u = vv[first]
        else:  # noisy-or: the chance of at least one of the annotated terms below
            starts = np.flatnonzero(first)
            u = 1.0 - np.exp(np.add.reduceat(np.log1p(-np.minimum(vv, 0.999)), starts)) if len(vv) else vv
        U = sparse.csc_matrix((u, (key[first] // T, key[first] % T)), shape=(n, T))
        return F, U

    def _onset_row(self, disease, exclude: frozenset) -> np.ndarray:
        row = np.zeros(len(self.onset_terms_), dtype=bool)
        for a in disease.onsets:
            if exclude and a.cites(exclude, self._exclude_mode):
                continue
            j = self._onset_index.get(a.hpo_id)
            if j is not None:
                row |= self._onset_compat[:, j]
        return row

    def _block(self, rows: np.ndarray, sex: str | None, exclude: frozenset, full: bool = False) -> _Block:
        diseases = [self.knowledge_.diseases[self.candidates_[i]] for i in rows]
        F, U = self._matrices(diseases, sex, exclude)
        onset = (np.stack([self._onset_row(d, exclude) for d in diseases]) if diseases
                 else np.zeros((0, len(self.onset_terms_)), dtype=bool))
        return _Block(F, U, onset, onset.any(axis=1), None if full else np.asarray(rows))

    # ------------------------------------------------------------ scoring

    def _check_fitted(self) -> None:
        if not hasattr(self, "candidates_"):
            raise RuntimeError("call fit() before ranking")

    def _ancestors(self, j: int) -> np.ndarray:
        """Proper ancestors of term j within Phenotypic abnormality (itself included)."""
        a = self._anc_indices[self._anc_indptr[j]:self._anc_indptr[j + 1]]
        return a[(a != j) & self._pheno[a]]

    def query_terms(self, patient: Patient) -> tuple[list[int], list[int]]:
        """(observed, excluded) term indices that are scored, after the clean-up of the module
        docstring."""
        self._check_fitted()
        ont = self.knowledge_.ontology

        def usable(ids):
            out = []
            for t in ids:
                r = ont.resolve(t)
                if r is not None and self._pheno[ont.index[r]]:
                    out.append(ont.index[r])
            return list(dict.fromkeys(out))

        obs, exc = usable(patient.observed), usable(patient.excluded)
        obs_anc = set()
        for j in obs:
            obs_anc.update(self._ancestors(j).tolist())
        exc = [j for j in exc if j not in obs_anc and j not in set(obs)]
        if self.drop_redundant:
            obs = [j for j in obs if j not in obs_anc]
            exc_set = set(exc)
            exc = [j for j in exc if not any(a in exc_set for a in self._ancestors(j).tolist())]
        return obs, exc

    def _observed_loglr(self, blk: _Block, j: int) -> np.ndarray:
        bg = self.background_
        n = blk.U.shape[0]
        e = np.zeros(n)
        U, F = blk.U, blk.F
        s, t = U.indptr[j], U.indptr[j + 1]
        e[U.indices[s:t]] = U.data[s:t] / bg[j]
        for a in self._ancestors(j):
            s, t = F.indptr[a], F.indptr[a + 1]
            if t > s:
                idx = F.indices[s:t]
                e[idx] = np.maximum(e[idx], F.data[s:t] / bg[a])
            if self.ic_[a] >= self.min_partial_ic:
                s, t = U.indptr[a], U.indptr[a + 1]
                if t > s:
                    idx = U.indices[s:t]
                    e[idx] = np.maximum(e[idx], self.partial_weight * U.data[s:t] / bg[a])
        return np.log((1.0 - self.noise) * e + self.noise)

    def _excluded_loglr(self, blk: _Block, j: int) -> np.ndarray:
        keep = 1.0 - self.false_negative
        out = np.full(blk.U.shape[0], -np.log1p(-keep * self.background_[j]))
        s, t = blk.U.indptr[j], blk.U.indptr[j + 1]
        out[blk.U.indices[s:t]] += np.log1p(-keep * np.minimum(blk.U.data[s:t], 1.0))
        return out

    def _onset_loglr(self, blk: _Block, k: int) -> np.ndarray:
        q = self.onset_background_[k]
        m = self.onset_mismatch
        out = np.zeros(blk.U.shape[0])
        compat = blk.onset[:, k]
        out[blk.has_onset & compat] = np.log((1 - m) / q)
        out[blk.has_onset & ~compat] = np.log(m / (1 - q))
        return out

    def _cached(self, key, fn):
        v = self._cache.get(key)
        if v is None:
            v = fn().astype(np.float32)  # half the memory: 4,096 cached terms x 8,352 diseases = 137 MB
            self._cache[key] = v
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return v

    def _patient_onset(self, patient: Patient) -> int | None:
        ont = self.knowledge_.ontology
        term = ont.resolve(patient.onset) if patient.onset else None
        if term is None and patient.onset_age:
            term = onset_class_of_age(patient.onset_age)
        return self._onset_index.get(term) if term else None

    def _block_score(self, blk: _Block, key, obs: list[int], exc: list[int], onset: int | None) -> np.ndarray:
        score = np.zeros(blk.U.shape[0])
        for j in obs:
            score += self._cached((key, "o", j), lambda: self._observed_loglr(blk, j))
        for j in exc:
            score += self._cached((key, "x", j), lambda: self._excluded_loglr(blk, j))
        if onset is not None and self.use_onset:
            score += self._onset_loglr(blk, onset)
        return score

    def _override(self, sex: str | None, exclude: frozenset):
        """The rebuilt rows for a patient's sex and left-out references, or None."""
        rows = set()
        if self.use_sex and sex in self._sex_restricted:
            rows |= self._sex_restricted[sex]
        for r in exclude:
            rows |= self._by_ref.get(r, set())
        if not rows:
            return None, None
        key = (sex if self.use_sex else None, exclude)
        blk = self._blocks.get(key)
        if blk is None:
            blk = self._block(np.array(sorted(rows)), sex if self.use_sex else None, exclude)
            self._blocks[key] = blk
            if len(self._blocks) > 256:
                old, _ = self._blocks.popitem(last=False)
                for k in [k for k in self._cache if k[0] == old]:
                    del self._cache[k]
        else:
            self._blocks.move_to_end(key)
        return key, blk

    def score(self, patient: Patient, exclude_references: Iterable[str] = ()) -> np.ndarray:
        """Scores (sum of natural-log likelihood ratios, plus the log prior) over `candidates_`, higher is
        better.
        `exclude_references` (e.g. `patient.pmids`): annotations citing them are left out."""
        self._check_fitted()
        obs, exc = self.query_terms(patient)
        onset = self._patient_onset(patient)
        exclude = frozenset(exclude_references)
        score = self._block_score(self._base, "base", obs, exc, onset) + self.log_prior_
        key, blk = self._override(patient.sex, exclude)
        if blk is not None:
            score[blk.rows] = self._block_score(blk, key, obs, exc, onset) + self.log_prior_[blk.rows]
        if self.prior == "publications" and exclude:
            for i in {i for r in exclude for i in self._by_ref.get(r, ())}:  # uncount the left-out ones
                score[i] += np.log1p(len(self._publications[i] - exclude)) - self.log_prior_[i]
        return score

    def _top(self, score: np.ndarray, k: int | None) -> list[tuple[str, str, float]]:
        order = np.argsort(-score, kind="stable")
        if k is not None:
            order = order[:k]
        return [(self.candidates_[i], self.candidate_names_[i], float(score[i])) for i in order]

    def rank(self, patient: Patient, k: int | None = 10, exclude_references: Iterable[str] = ()
             ) -> list[tuple[str, str, float]]:
        """The top `k` candidates (all with k=None) as (disease id, name, score), best first."""
        return self._top(self.score(patient, exclude_references), k)

    def scores_many(self, patients: Iterable[Patient], leave_out_own_publication: bool = False
                    ) -> Iterator[np.ndarray]:
        """`score` for each patient; with `leave_out_own_publication`, each patient's `pmids` are
        left out of the knowledge for that patient."""
        for p in patients:
            yield self.score(p, p.pmids if leave_out_own_publication else ())

    def rank_many(self, patients: Iterable[Patient], k: int | None = 10,
                  leave_out_own_publication: bool = False) -> list[list[tuple[str, str, float]]]:
        return [self._top(s, k) for s in self.scores_many(patients, leave_out_own_publication)]

    def gold_rank(self, score: np.ndarray, gold: Iterable[str]) -> float:
        """The 1-based rank, in the order `rank` gives, of the best-placed gold disease in `score`;
        inf when no gold disease is a candidate."""
        best = np.inf
        for g in gold:
            i = self._cand_index.get(g)
            if i is None:
                continue
            s = score[i]
            # ahead of it: higher scores, and equal scores earlier in candidate order (stable sort)
            r = 1 + int(np.count_nonzero(score > s)) + int(np.count_nonzero(score[:i] == s))
            best = min(best, r)
        return float(best)
