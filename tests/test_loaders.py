"""Data loading: JSONL / CSV / Parquet tables with a column map, errors that say where the problem is,
the IU X-ray loader, hash splits and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthdx.datasets import ColumnMap, load_iu_xray, load_records, load_table
from synthdx.errors import DataError
from synthdx.io import atomic_open, read_jsonl, write_json
from synthdx.records import Record
from synthdx.splits import hash_bucket, hash_split

ROWS = [
    {"pid": "r1", "findings": "Heart is enlarged.", "impression": "Cardiomegaly.", "y": "Cardiomegaly"},
    {"pid": "r2", "findings": "Small left effusion.", "impression": "", "y": "Pleural Effusion; Edema"},
    {"pid": "r3", "findings": "", "impression": "No acute disease.", "y": ""},
]
COLS = ColumnMap(id="pid", text=("findings", "impression"), labels="y")
EXPECTED_TEXT = ["Heart is enlarged.\nCardiomegaly.", "Small left effusion.", "No acute disease."]
EXPECTED_LABELS = [["Cardiomegaly"], ["Pleural Effusion", "Edema"], []]


def _write_jsonl(path: Path, rows: list[dict], blank_lines_before: int = 0) -> Path:
    path.write_text("\n" * blank_lines_before + "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _check(records: list[Record], path: Path) -> None:
    assert [r.id for r in records] == ["r1", "r2", "r3"]
    assert [r.text for r in records] == EXPECTED_TEXT
    assert [r.labels for r in records] == EXPECTED_LABELS
    assert all(r.meta["source"] == str(path) for r in records)


# ---- the three formats, same column map --------------------------------------------------------

def test_jsonl_with_column_map_string_labels(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", ROWS)
    recs = load_table(path, COLS)
    _check(recs, path)
    assert [r.meta["line"] for r in recs] == [1, 2, 3]
    # load_records picks the table loader from the file name
    assert [r.to_dict() for r in load_records(path, columns=COLS)] == [r.to_dict() for r in recs]


def test_jsonl_labels_as_list_and_missing_labels_column(tmp_path):
    rows = [dict(r, y=lab) for r, lab in zip(ROWS, [["Cardiomegaly"], ["Pleural Effusion", " Edema "], []])]
    rows.append({"pid": "r4", "findings": "Clear lungs.", "impression": None})  # no label column: unlabelled
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    recs = load_table(path, COLS)
    assert [r.labels for r in recs] == EXPECTED_LABELS + [None]
    with pytest.raises(DataError) as e:
        load_table(path, COLS, require_labels=True)
    assert (e.value.line, e.value.field) == (4, "y")


def test_jsonl_labels_with_other_separator(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "t", "labels": "x|y | z"}])
    assert load_table(path, ColumnMap(label_sep="|"))[0].labels == ["x", "y", "z"]


def test_jsonl_labels_of_wrong_type(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "t", "labels": "x"},
                                               {"id": "b", "text": "t", "labels": 3}])
    with pytest.raises(DataError) as e:
        load_table(path)
    assert (e.value.path, e.value.line, e.value.field) == (path, 2, "labels")


def test_csv_with_column_map(tmp_path):
    path = _write_csv(tmp_path / "d.csv", ["pid", "findings", "impression", "y"],
                      [[r["pid"], r["findings"], r["impression"], r["y"]] for r in ROWS])
    recs = load_table(path, COLS)
    _check(recs, path)
    assert [r.meta["line"] for r in recs] == [2, 3, 4]  # line 1 is the header


def test_tsv_is_tab_separated(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("id\ttext\tlabels\na\thello, world\tx;y\n", encoding="utf-8")
    (rec,) = load_table(path)
    assert (rec.id, rec.text, rec.labels) == ("a", "hello, world", ["x", "y"])


def test_parquet_with_column_map_and_list_labels(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({
        "pid": [r["pid"] for r in ROWS],
        "findings": [r["findings"] for r in ROWS],
        "impression": [r["impression"] for r in ROWS],
        "y": EXPECTED_LABELS,
    })
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    recs = load_table(path, COLS)
    _check(recs, path)
    assert [r.meta["line"] for r in recs] == [1, 2, 3]  # 1-based row numbers
    # and labels as "a;b" strings in parquet
    pq.write_table(table.set_column(3, "y", pa.array([r["y"] for r in ROWS])), path)
    assert [r.labels for r in load_table(path, COLS)] == EXPECTED_LABELS


def test_unknown_extension_is_an_error(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("id,text\n")
    with pytest.raises(DataError, match="format"):
        load_table(path)
    with pytest.raises(DataError, match="not found"):
        load_table(tmp_path / "missing.jsonl")


# ---- errors name the file, the line and the field ----------------------------------------------

@pytest.mark.parametrize("blank_before", [0, 3])
def test_malformed_json_line_number(tmp_path, blank_before):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"id": "a", "text": "fine"})
    # blank lines (skipped, but counted) before and between the rows
    path.write_text("\n" * blank_before + good + "\n\n" + '{"id": "b", "text": "oops"\n', encoding="utf-8")
    bad_line = blank_before + 3
    with pytest.raises(DataError) as e:
        load_table(path)
    assert e.value.path == path and e.value.line == bad_line
    assert str(path) in str(e.value) and f"line {bad_line}" in str(e.value)
    assert "JSON" in str(e.value)


def test_json_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        list(read_jsonl(path))
    assert e.value.line == 2


def test_csv_missing_text_column(tmp_path):
    path = _write_csv(tmp_path / "d.csv", ["id", "body"], [["a", "hello"]])
    with pytest.raises(DataError) as e:
        load_table(path)
    assert (e.value.path, e.value.line, e.value.field) == (path, 2, "text")
    assert str(path) in str(e.value) and "line 2" in str(e.value) and "field 'text'" in str(e.value)
    assert "body" in str(e.value)  # says which columns the row does have


def test_empty_text(tmp_path):
    path = _write_csv(tmp_path / "d.csv", ["pid", "findings", "impression", "y"],
                      [["r1", "ok", "", ""], ["r2", "  ", "", "x"], ["r3", "ok", "", ""]])
    with pytest.raises(DataError, match="empty text") as e:
        load_table(path, COLS)
    assert e.value.line == 3 and e.value.field == "findings/impression"
    recs = load_table(path, COLS, allow_empty_text=True)
    assert [r.text for r in recs] == ["ok", "", "ok"]


def test_empty_id(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "x"}, {"id": " ", "text": "y"}])
    with pytest.raises(DataError) as e:
        load_table(path)
    assert (e.value.line, e.value.field) == (2, "id")


def test_duplicate_id_names_both_lines(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"},
                                               {"id": 7, "text": "z"}, {"id": "a", "text": "w"}])
    with pytest.raises(DataError) as e:
        load_table(path)
    assert (e.value.path, e.value.line, e.value.field) == (path, 4, "id")
    assert "duplicate" in str(e.value) and "line 1" in str(e.value)


def test_text_of_wrong_type(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": {"x": 1}}])
    with pytest.raises(DataError) as e:
        load_table(path)
    assert (e.value.line, e.value.field) == (1, "text")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_non_utf8_file(tmp_path, suffix):
    path = tmp_path / f"latin{suffix}"
    if suffix == ".jsonl":
        content = '{"id": "a", "text": "caf\u00e9 na\u00efve"}\n'
    else:
        content = "id,text\na,caf\u00e9 na\u00efve\n"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(DataError) as e:
        load_table(path)
    assert e.value.path == path
    assert e.value.line == (1 if suffix == ".jsonl" else 2)  # the line with the bad byte
    assert str(path) in str(e.value) and "UTF-8" in str(e.value)


def test_csv_quoted_multiline_field_keeps_line_numbers(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,text\n'
                    'a,"first line\nsecond line\nthird line"\n'   # lines 2-4
                    'b,plain\n'                                    # line 5
                    'c,""\n', encoding="utf-8")                    # line 6: empty text
    recs = load_table(path, allow_empty_text=True)
    assert recs[0].text == "first line\nsecond line\nthird line"
    assert [r.meta["line"] for r in recs] == [2, 5, 6]
    with pytest.raises(DataError) as e:
        load_table(path)
    assert e.value.line == 6


def test_csv_blank_line_keeps_line_numbers(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,text\na,x\n\nb,y\n", encoding="utf-8")  # b is on line 4
    assert [r.meta["line"] for r in load_table(path)] == [2, 4]


def test_csv_row_with_too_many_fields(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,text\na,x\nb,y,extra\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_table(path)
    assert e.value.line == 3


# ---- IU X-ray -------------------------------------------------------------------------------------

def test_iu_xray_loader(tmp_path):
    header = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]
    rows = [
        ["1", "normal", "normal", "Xray Chest PA and Lateral", "Chest pain", "None",
         "The heart is normal in size.", "Normal chest x-XXXX."],
        ["2", "Pulmonary Atelectasis/base/left;Calcified Granuloma/lung/upper lobe/right",
         "Pulmonary Atelectasis;Calcified Granuloma", "", "", "", "Left basilar atelectasis.", ""],
        ["3", "No Indexing", "No Indexing", "", "", "", "Something.", "Something else."],
        ["4", "normal", "normal", "", "", "", "", "  "],                       # no text: skipped
        ["5", "Scoliosis", "Scoliosis;Spondylosis", "", "", "", "", "Mild scoliosis."],  # unknown heads
        ["6", "Cardiomegaly/mild;Opacity", "Cardiomegaly;opacity;Cardiomegaly", "", "", "",
         "Heart enlarged,\nwith an opacity.", "Cardiomegaly."],                 # multi-line field
    ]
    path = _write_csv(tmp_path / "indiana_reports.csv", header, rows)
    recs = load_iu_xray(path)
    assert [r.id for r in recs] == ["1", "2", "5", "6"]
    assert [r.labels for r in recs] == [["No Finding"], ["Atelectasis", "Granuloma"], [],
                                        ["Cardiomegaly", "Lung Opacity"]]
    assert recs[0].text == "FINDINGS: The heart is normal in size.\nIMPRESSION: Normal chest x-XXXX."
    assert recs[1].text == "FINDINGS: Left basilar atelectasis."
    assert recs[2].text == "IMPRESSION: Mild scoliosis."
    assert recs[0].meta["indication"] == "Chest pain"
    assert recs[1].meta["problems"] == "Pulmonary Atelectasis;Calcified Granuloma"
    assert [r.meta["line"] for r in recs] == [2, 3, 6, 7]
    # `auto` recognises the file name
    assert [r.to_dict() for r in load_records(path)] == [r.to_dict() for r in recs]


def test_iu_xray_errors(tmp_path):
    path = _write_csv(tmp_path / "indiana_reports.csv", ["uid", "Problems", "findings"], [["1", "normal", "x"]])
    with pytest.raises(DataError) as e:
        load_iu_xray(path)
    assert (e.value.line, e.value.field) == (2, "impression")
    path = _write_csv(tmp_path / "indiana_reports.csv", ["uid", "Problems", "findings", "impression"],
                      [["1", "normal", "x", "y"], ["2", "", "x", "y"]])
    with pytest.raises(DataError) as e:
        load_iu_xray(path)
    assert (e.value.line, e.value.field) == (3, "Problems")


# ---- splits ---------------------------------------------------------------------------------------

def _recs(n: int, group_of=None) -> list[Record]:
    return [Record(id=f"rec-{i}", text="t", meta={"pub": group_of(i)} if group_of else {}) for i in range(n)]


def test_hash_split_deterministic_and_order_independent():
    recs = _recs(400)
    pool, test = hash_split(recs, 0.25)
    assert len(pool) + len(test) == 400
    assert 60 < len(test) < 140  # roughly a quarter
    pool2, test2 = hash_split(list(reversed(recs)), 0.25)
    assert {r.id for r in test2} == {r.id for r in test}
    # adding records never moves existing ones
    _, test3 = hash_split(recs + _recs(600)[400:], 0.25)
    assert {r.id for r in test3 if int(r.id.split("-")[1]) < 400} == {r.id for r in test}
    # the side depends on the id (and salt) only
    assert all(hash_bucket(r.id) < 0.25 for r in test) and all(hash_bucket(r.id) >= 0.25 for r in pool)
    _, test_salted = hash_split(recs, 0.25, salt="other")
    assert {r.id for r in test_salted} != {r.id for r in test}


def test_hash_split_respects_group_key():
    recs = _recs(300, group_of=lambda i: f"pub-{i // 5}")
    pool, test = hash_split(recs, 0.3, group_key="pub")
    test_groups = {r.meta["pub"] for r in test}
    assert test_groups and {r.meta["pub"] for r in pool}.isdisjoint(test_groups)
    assert all(sum(r.meta["pub"] == g for r in test) == 5 for g in test_groups)
    # records without the key fall back to their id
    lone = Record(id="lonely", text="t")
    pool, test = hash_split([lone], 0.5, group_key="pub")
    assert (lone in test) == (hash_bucket("lonely") < 0.5)


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_hash_split_rejects_bad_fraction(frac):
    with pytest.raises(ValueError):
        hash_split(_recs(3), frac)


# ---- atomic writes --------------------------------------------------------------------------------

def test_atomic_open_keeps_old_file_when_writer_raises(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"v": 1})
    before = path.read_text()
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write('{"v": 2, "half')
            raise RuntimeError("boom")
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temp file left behind
    with atomic_open(path) as f:
        f.write("new")
    assert path.read_text() == "new"
    with atomic_open(tmp_path / "sub" / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"\x00\x01"
