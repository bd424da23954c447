"""GA4GH Phenopacket Schema v2 cases as phenotype-only patients.

`load_phenopackets(path)` reads a directory (every `*.json` below it), a zip (the official release
layout `<cohort>/<case>.json`, e.g. phenopacket-store) or a JSONL file (one phenopacket a line), in
a stable order (sorted paths / members; file order for JSONL), and returns `Case`s.

Read, and nothing else:
* `id`; `subject.sex`; `subject.timeAtLastEncounter` (an age as ISO 8601 duration);
* `phenotypicFeatures[]`: `type.id` (HPO), `type.label`, `excluded`, `onset`;
* the onset of the disease (`diseases[].onset`, only that field), else the earliest feature onset;
* `metaData.externalReferences[].id` starting with `PMID:` (the ids only: the titles often name
  the gene);
* gold: `interpretations[].diagnosis.disease` (`id`, `label`); no interpretation -> unlabelled.

Never read: `interpretations[].diagnosis.genomicInterpretations` (variants, genes), `variants`,
`measurements`, `biosamples`, `files`, the disease terms in `diseases[]`, and the zip folder name
(the cohort is named after the gene). A `Patient` has no field that could hold them.

A malformed case raises `DataError` naming the file (or `zip (member ...)`, or the JSONL line) and
the field, e.g. `phenotypicFeatures[3].type.id`.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import DataError
from ..io import read_jsonl
from ..patients import Case, Patient

__all__ = ["iter_phenopackets", "load_phenopackets", "parse_phenopacket"]

_HPO_ID = re.compile(r"^HP:\d{7}$")
_SEX = {"FEMALE": "FEMALE", "MALE": "MALE", "UNKNOWN_SEX": None, "OTHER_SEX": None,
        1: "FEMALE", 2: "MALE", 0: None, 3: None}
ANTENATAL_ONSET = "HP:0030674"

# rough age in days of HPO onset terms, only to pick the earliest of several feature onsets
_ONSET_DAYS = {
    "HP:0011460": -250, "HP:0011461": -150, "HP:0034199": -200, "HP:0034198": -120, "HP:0034197": -40,
    "HP:0030674": -100, "HP:0003577": 0, "HP:0003623": 14, "HP:0003593": 180, "HP:0011463": 3 * 365,
    "HP:0003621": 10 * 365, "HP:0003581": 30 * 365, "HP:0011462": 25 * 365, "HP:0003596": 50 * 365,
    "HP:0003584": 65 * 365,
}


def load_phenopackets(path: str | Path) -> list[Case]:
    """All cases under `path` (directory, .zip or .jsonl); see the module docstring."""
    return list(iter_phenopackets(path))


def iter_phenopackets(path: str | Path) -> Iterator[Case]:
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        if not files:
            raise DataError("no *.json phenopackets in this directory", path)
        for f in files:
            yield parse_phenopacket(_load_json_bytes(f.read_bytes(), str(f)), str(f))
    elif not path.exists():
        raise DataError("no such file or directory", path)
    elif path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as z:
            members = sorted(n for n in z.namelist()
                             if n.lower().endswith(".json") and not n.endswith("/")
                             and not n.startswith("__MACOSX/") and not Path(n).name.startswith("._"))
            if not members:
                raise DataError("no *.json phenopackets in this zip", path)
            for m in members:
                where = f"{path} (member {m})"
                yield parse_phenopacket(_load_json_bytes(z.read(m), where), where)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        for line, obj in read_jsonl(path):
            yield parse_phenopacket(obj, f"{path}, line {line}")
    elif path.suffix.lower() == ".json":
        yield parse_phenopacket(_load_json_bytes(path.read_bytes(), str(path)), str(path))
    else:
        raise DataError("expected a directory, a .zip, a .jsonl or a .json file of phenopackets", path)


def _load_json_bytes(data: bytes, where: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text", where) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})", where) from None


def _get(obj: dict, key: str, kind: type | tuple, where: str, field: str, default: Any = None) -> Any:
    v = obj.get(key, default)
    if v is None:
        return default
    if not isinstance(v, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"expected {_article(name)}, got {type(v).__name__}", where, field=field)
    return v


def _article(name: str) -> str:
    return {"dict": "an object", "list": "a list", "str": "a string", "bool": "true/false"}.get(name, name)


def _hpo(v: Any, where: str, field: str) -> str:
    if not isinstance(v, str) or not _HPO_ID.match(v.strip()):
        raise DataError(f"expected an HPO id like HP:0001250, got {v!r}", where, field=field)
    return v.strip()


def _time_element(t: dict, where: str, field: str) -> tuple[str | None, str | None]:
    """(HPO onset term, ISO 8601 age) of a phenopacket TimeElement; both None if neither applies."""
    if "age" in t:
        age = _get(t, "age", dict, where, f"{field}.age", {})
        iso = _get(age, "iso8601duration", str, where, f"{field}.age.iso8601duration")
        return None, (iso.strip() or None) if iso else None
    if "ageRange" in t:
        rng = _get(t, "ageRange", dict, where, f"{field}.ageRange", {})
        start = _get(rng, "start", dict, where, f"{field}.ageRange.start", {})
        iso = _get(start, "iso8601duration", str, where, f"{field}.ageRange.start.iso8601duration")
        return None, (iso.strip() or None) if iso else None
    if "ontologyClass" in t:
        oc = _get(t, "ontologyClass", dict, where, f"{field}.ontologyClass", {})
        return _hpo(oc.get("id"), where, f"{field}.ontologyClass.id"), None
    if "gestationalAge" in t:
        return ANTENATAL_ONSET, None
    return None, None


def _onset_days(term: str | None, age: str | None) -> float:
    from ..knowledge.hpo import iso_duration_days

    if age is not None:
        d = iso_duration_days(age)
        return d if d is not None else float("inf")
    return _ONSET_DAYS.get(term or "", float("inf"))


def parse_phenopacket(pp: Any, where: str = "<phenopacket>") -> Case:
    """One phenopacket (parsed JSON) as a Case; `where` names it in errors."""
    if not isinstance(pp, dict):
        raise DataError(f"a phenopacket must be a JSON object, got {type(pp).__name__}", where)
    pid = pp.get("id")
    if not isinstance(pid, str) or not pid.strip():
        raise DataError("missing or empty phenopacket id", where, field="id")

    subject = _get(pp, "subject", dict, where, "subject", {})
    sex_raw = subject.get("sex")
    if sex_raw is not None and sex_raw not in _SEX:
        raise DataError(f"unknown sex {sex_raw!r} (FEMALE, MALE, UNKNOWN_SEX or OTHER_SEX)", where,
                        field="subject.sex")
    sex = _SEX.get(sex_raw) if sex_raw is not None else None
    tale = _get(subject, "timeAtLastEncounter", dict, where, "subject.timeAtLastEncounter", {})
    _, age = _time_element(tale, where, "subject.timeAtLastEncounter")

    observed, excluded, labels = [], [], {}
    feature_onsets = []
    for i, feat in enumerate(_get(pp, "phenotypicFeatures", list, where, "phenotypicFeatures", [])):
        f = f"phenotypicFeatures[{i}]"
        if not isinstance(feat, dict):
            raise DataError("expected an object", where, field=f)
        typ = _get(feat, "type", dict, where, f"{f}.type")
        if typ is None:
            raise DataError("missing feature type", where, field=f"{f}.type")
        hpo = _hpo(typ.get("id"), where, f"{f}.type.id")
        label = _get(typ, "label", str, where, f"{f}.type.label")
        if label:
            labels.setdefault(hpo, label.strip())
        if _get(feat, "excluded", bool, where, f"{f}.excluded", False):
            excluded.append(hpo)
        else:
            observed.append(hpo)
            on = _get(feat, "onset", dict, where, f"{f}.onset")
            if on:
                feature_onsets.append(_time_element(on, where, f"{f}.onset"))

    onset = onset_age = None
    for i, dis in enumerate(_get(pp, "diseases", list, where, "diseases", [])):
        if not isinstance(dis, dict):
            raise DataError("expected an object", where, field=f"diseases[{i}]")
        on = _get(dis, "onset", dict, where, f"diseases[{i}].onset")  # the onset only, never the term
        if on:
            onset, onset_age = _time_element(on, where, f"diseases[{i}].onset")
            if onset or onset_age:
                break
    if onset is None and onset_age is None and feature_onsets:
        onset, onset_age = min(feature_onsets, key=lambda x: _onset_days(*x))

    meta = _get(pp, "metaData", dict, where, "metaData", {})
    pmids = []
    for i, ref in enumerate(_get(meta, "externalReferences", list, where, "metaData.externalReferences", [])):
        if not isinstance(ref, dict):
            raise DataError("expected an object", where, field=f"metaData.externalReferences[{i}]")
        rid = ref.get("id")
        if isinstance(rid, str) and rid.strip().upper().startswith("PMID:"):
            pmids.append("PMID:" + rid.strip()[5:].strip())

    gold, gold_labels = None, []
    interps = _get(pp, "interpretations", list, where, "interpretations", [])
    for i, it in enumerate(interps):
        f = f"interpretations[{i}]"
        if not isinstance(it, dict):
            raise DataError("expected an object", where, field=f)
        diag = _get(it, "diagnosis", dict, where, f"{f}.diagnosis")
        if not diag:
            continue
        dis = _get(diag, "disease", dict, where, f"{f}.diagnosis.disease")
        if not dis:
            continue
        did = dis.get("id")
        if not isinstance(did, str) or not did.strip():
            raise DataError("missing disease id", where, field=f"{f}.diagnosis.disease.id")
        gold = gold or []
        if did.strip() not in gold:
            gold.append(did.strip())
            gold_labels.append(str(dis.get("label") or "").strip())

    patient = Patient(id=pid.strip(), sex=sex, age=age, observed=tuple(observed), excluded=tuple(excluded),
                      onset=onset, onset_age=onset_age, pmids=tuple(dict.fromkeys(pmids)), term_labels=labels)
    return Case(patient=patient, gold=None if gold is None else tuple(gold), gold_labels=tuple(gold_labels),
                source=where)
