import csv
from collections import Counter
from pathlib import Path

import pytest

from synthdx.datasets import load_records
from synthdx.datasets.mtsamples import DOCUMENT_TYPES, load_mtsamples, normalise_text, text_id
from synthdx.errors import DataError
from synthdx.splits import hash_split

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "mtsamples" / "mtsamples.dev.csv"
HEADER = ["id", "description", "medical_specialty", "sample_name", "transcription", "keywords"]

A = "ECHO: Normal left ventricular function.  Ejection fraction 60%."
B = "OPERATION: Coronary artery bypass graft x3."
# (id, specialty as the file writes it, with its leading space, sample name, transcription)
ROWS = [
    ("10", " Cardiovascular / Pulmonary", "Echo", A),
    ("11", " Radiology", "Echo - 2", "echo:   normal left ventricular function.\nEjection fraction 60%. "),
    ("12", " Surgery", "CABG", B),
    ("13", " Cardiovascular / Pulmonary", "CABG", B),
    ("14", " Cardiovascular / Pulmonary", "Chest pain", "Chest pain, troponin negative."),
    ("15", " Radiology", "MRI brain", "MRI brain without contrast: no acute infarct."),
    ("16", " Orthopedic", "Knee", "Total knee arthroplasty, left."),
    ("17", " Podiatry", "Knee - 2", "Total knee arthroplasty, left."),
    ("18", " Orthopedic", "Wrist", "Distal radius fracture, cast applied."),
    ("19", " Dentistry", "Tooth", "Extraction of tooth #32."),
    ("20", " Surgery", "Tooth", "Extraction of tooth #32."),
    ("21", " Consult - History and Phy.", "Consult", "HISTORY: Patient seen for a general consult."),
    ("22", " Orthopedic", "Empty", "  "),
]


def write_csv(path: Path, rows=ROWS, header=HEADER) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for rid, spec, name, text in rows:
            full = {"id": rid, "description": f"about {name}", "medical_specialty": spec,
                    "sample_name": name + " ", "transcription": text, "keywords": ""}
            w.writerow([full[h] for h in header])
    return path


@pytest.fixture
def tiny(tmp_path):
    return load_mtsamples(write_csv(tmp_path / "mtsamples.csv"), min_label_count=2)


def by_text(data, text):
    rid = text_id(normalise_text(text))
    return next(r for r in data.records if r.id == rid)


def test_duplicates_grouped_into_one_multi_label_record(tiny):
    echo = by_text(tiny, A)
    assert echo.labels == ["Cardiovascular / Pulmonary", "Radiology"]
    assert echo.text == A  # the first row's text as written
    assert echo.meta["row_ids"] == ["10", "11"]
    assert echo.meta["sample_names"] == ["Echo", "Echo - 2"]
    assert echo.meta["description"] == "about Echo"
    assert echo.id == text_id(normalise_text(A)) and echo.id.startswith("mts-") and len(echo.id) == 16
    assert len({r.id for r in tiny.records}) == len(tiny.records)


def test_document_types_are_meta_not_labels(tiny):
    cabg = by_text(tiny, B)
    assert cabg.labels == ["Cardiovascular / Pulmonary"]
    assert cabg.meta["document_types"] == ["Surgery"]
    assert cabg.meta["filed_under"] == ["Surgery", "Cardiovascular / Pulmonary"]
    assert not any(d in tiny.label_space for d in DOCUMENT_TYPES)
    assert tiny.summary["document_type_counts"] == {"Surgery": 2, "Consult - History and Phy.": 1}


def test_rare_labels_and_texts_without_a_specialty_are_dropped_and_counted(tiny):
    assert tiny.label_space.names == ["Cardiovascular / Pulmonary", "Orthopedic", "Radiology"]
    knee = by_text(tiny, "Total knee arthroplasty, left.")
    assert knee.labels == ["Orthopedic"] and knee.meta["rare_specialties"] == ["Podiatry"]
    s = tiny.summary
    assert s["label_counts"] == {"Cardiovascular / Pulmonary": 3, "Orthopedic": 2, "Radiology": 2}
    assert s["dropped_labels"] == {"Dentistry": 1, "Podiatry": 1}
    assert (s["rows_read"], s["empty_transcription_rows"], s["rows_used"]) == (13, 1, 12)
    assert (s["distinct_texts"], s["duplicate_groups"], s["duplicate_rows"]) == (8, 4, 4)
    # the tooth extraction (Dentistry is rare, Surgery a document type) and the consult (only a document type)
    assert s["dropped_texts_rare_only"] == 1 and s["dropped_texts_document_type_only"] == 1
    assert s["dropped_texts"] == 2 and s["records"] == len(tiny.records) == 6
    assert s["multi_label_texts"] == 1 and s["multi_specialty_texts"] == 2
    assert "Extraction" not in " ".join(r.text for r in tiny.records)
    assert "records 6 (1 multi-label)" in tiny.describe()


def test_with_min_count_one_every_specialty_is_a_label(tmp_path):
    data = load_mtsamples(write_csv(tmp_path / "m.csv"), min_label_count=1)
    assert "Dentistry" in data.label_space and "Podiatry" in data.label_space
    assert data.summary["dropped_labels"] == {} and data.summary["dropped_texts"] == 1  # the consult


def test_hash_split_never_separates_duplicates_and_ids_are_stable(tmp_path):
    data = load_mtsamples(write_csv(tmp_path / "a.csv"), min_label_count=1)
    # the same rows in another order, one text with other whitespace and case: the same ids
    shuffled = [ROWS[i] for i in (5, 1, 0, 12, 3, 2, 7, 6, 4, 8, 10, 9, 11)]
    shuffled[2] = ("10", " Cardiovascular / Pulmonary", "Echo", "  " + A.upper().replace(" ", "\t"))
    again = load_mtsamples(write_csv(tmp_path / "b.csv", shuffled), min_label_count=1)
    assert sorted(r.id for r in data.records) == sorted(r.id for r in again.records)
    norm_of_row = {rid: normalise_text(text) for rid, _, _, text in ROWS}
    for salt in ("synthdx", "a", "b", "c", "d"):
        train, test = hash_split(data.records, 0.5, salt=salt)
        side = {rid: part for part, recs in (("train", train), ("test", test))
                for r in recs for rid in r.meta["row_ids"]}
        by_norm: dict[str, set] = {}
        for rid, part in side.items():
            by_norm.setdefault(norm_of_row[rid], set()).add(part)
        assert all(len(parts) == 1 for parts in by_norm.values())
        assert len(side) == sum(len(r.meta["row_ids"]) for r in data.records)


def test_registered_with_load_records(tmp_path):
    path = write_csv(tmp_path / "mtsamples_tiny.csv")
    recs = load_records(path, loader="mtsamples", min_label_count=2)
    assert [r.id for r in recs] == [r.id for r in load_mtsamples(path, min_label_count=2).records]
    assert [r.id for r in load_records(path, min_label_count=2)] == [r.id for r in recs]  # auto: mtsamples*.csv


def test_missing_column_names_file_and_line(tmp_path):
    path = write_csv(tmp_path / "bad.csv", header=[h for h in HEADER if h != "transcription"])
    with pytest.raises(DataError) as e:
        load_mtsamples(path)
    msg = str(e.value)
    assert str(path) in msg and "line 2" in msg and "transcription" in msg


def test_repeated_id_and_empty_file_are_data_errors(tmp_path):
    path = write_csv(tmp_path / "dup.csv", [ROWS[0], ("10",) + ROWS[1][1:]])
    with pytest.raises(DataError, match=r"dup\.csv, line 3.*duplicate id '10' \(first on line 2\)"):
        load_mtsamples(path)
    with pytest.raises(DataError, match="no data rows"):
        load_mtsamples(write_csv(tmp_path / "empty.csv", []))


@pytest.mark.skipif(not REAL.exists(), reason=f"{REAL} not present")
def test_real_file_summary_is_consistent():
    data = load_mtsamples(REAL)
    s = data.summary
    assert s["rows_read"] == s["empty_transcription_rows"] + s["rows_used"]
    assert s["rows_used"] == s["distinct_texts"] + s["duplicate_rows"]
    assert s["duplicate_groups"] <= s["duplicate_rows"]
    assert s["distinct_texts"] == s["records"] + s["dropped_texts"] == len(data.records) + s["dropped_texts"]
    assert s["dropped_texts"] == s["dropped_texts_document_type_only"] + s["dropped_texts_rare_only"]
    assert list(s["label_counts"]) == sorted(data.label_space.names, key=lambda n: (-s["label_counts"][n], n))
    assert all(n >= s["min_label_count"] for n in s["label_counts"].values())
    assert all(n < s["min_label_count"] for n in s["dropped_labels"].values())
    # label counts are counts of records, and no document type is a label
    assert Counter(lab for r in data.records for lab in r.labels) == Counter(s["label_counts"])
    assert not set(DOCUMENT_TYPES) & set(data.label_space.names)
    assert s["multi_label_texts"] == sum(len(r.labels) > 1 for r in data.records)
    assert len({r.id for r in data.records}) == len(data.records)
    assert sum(len(r.meta["row_ids"]) for r in data.records) <= s["rows_used"]
