"""The contamination guard: exact and near-duplicate search, and the error it raises."""

from __future__ import annotations

import random

import pytest

from synthdx.errors import SynthdxError
from synthdx.evaluate.contamination import (
    ContaminationError,
    find_overlap,
    guard_contamination,
    normalise_text,
)
from synthdx.records import Record

TRAIN_TEXTS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
    "Mild cardiomegaly. Small left pleural effusion with basilar atelectasis.",
    "Right upper lobe consolidation concerning for pneumonia. Follow-up radiograph recommended.",
    "Degenerative changes of the thoracic spine. Calcified granuloma in the left lower lobe.",
    "Interval placement of a right internal jugular central venous catheter, tip in the SVC.",
    # report-length: two changed words keep its character 5-gram Jaccard above the default 0.9
    ("FINDINGS: The cardiac silhouette and mediastinum size are within normal limits. There is no "
    "pulmonary edema. There is no focal consolidation. There are no signs of a pleural effusion. There "
    "is no evidence of pneumothorax. Mild degenerative changes of the thoracic spine. Stable calcified "
    "granuloma in the right upper lobe. Surgical clips in the right upper quadrant.\n"
    "IMPRESSION: No acute cardiopulmonary abnormality. No change from the prior examination."),
]
OTHER_TEXTS = [
    "Sternotomy wires are intact. Aortic knob calcification. No focal airspace disease.",
    "Large hiatal hernia projects over the cardiac silhouette. Lungs hyperexpanded and clear.",
    "Healed fracture of the right seventh rib. Bony structures otherwise unremarkable.",
]


def _recs(texts, prefix):
    return [Record(id=f"{prefix}{i}", text=t) for i, t in enumerate(texts)]


def test_normalise_text():
    assert normalise_text("  No  PNEUMOTHORAX.\n\tHeart: normal!! ") == "no pneumothorax heart normal"
    assert normalise_text("opacity/atelectasis") == "opacity atelectasis"
    assert normalise_text("...") == ""


def test_exact_after_normalisation():
    copy = "  THE HEART is normal in size.  the lungs are clear;\nno pleural effusion, or pneumothorax  "
    test = [OTHER_TEXTS[0], copy, OTHER_TEXTS[1]]
    assert find_overlap(TRAIN_TEXTS, test) == [
        {"test_index": 1, "train_index": 0, "kind": "exact", "similarity": 1.0}]


def test_exact_reports_first_train_index_and_beats_near():
    train = ["alpha beta gamma delta", "Alpha, beta gamma delta.", "alpha beta gamma deltas"]
    assert find_overlap(train, ["ALPHA BETA GAMMA DELTA"]) == [
        {"test_index": 0, "train_index": 0, "kind": "exact", "similarity": 1.0}]


def test_near_duplicate_with_a_couple_of_words_changed():
    changed = TRAIN_TEXTS[2].replace("concerning", "suspicious").replace("recommended", "advised")
    m = find_overlap(TRAIN_TEXTS, [OTHER_TEXTS[2], changed], near_threshold=0.5)
    assert len(m) == 1 and m[0]["test_index"] == 1 and m[0]["train_index"] == 2
    assert m[0]["kind"] == "near" and 0.5 <= m[0]["similarity"] < 0.6
    # a short text with two changed words is below the default threshold; a report-length one is not
    assert find_overlap(TRAIN_TEXTS, [changed]) == []
    long_changed = TRAIN_TEXTS[5].replace("Mild", "Moderate").replace("focal", "lobar")
    m = find_overlap(TRAIN_TEXTS, [long_changed])
    assert len(m) == 1 and m[0]["train_index"] == 5 and m[0]["kind"] == "near"
    assert 0.9 <= m[0]["similarity"] < 1.0


def test_disjoint_sets_have_no_overlap():
    assert find_overlap(TRAIN_TEXTS, OTHER_TEXTS) == []
    assert find_overlap(TRAIN_TEXTS, OTHER_TEXTS, near_threshold=0.5) == []


def test_empty_and_short_texts():
    # empty (after normalisation) texts never match; a text shorter than the n-gram matches only exactly
    assert find_overlap(["", "...", "abc"], ["", "  ", "ABC!", "abd"]) == [
        {"test_index": 2, "train_index": 2, "kind": "exact", "similarity": 1.0}]
    assert find_overlap([], ["abc"]) == [] and find_overlap(["abc"], []) == []


def test_exact_only_and_argument_checks():
    changed = TRAIN_TEXTS[0].replace("normal", "enlarged")
    assert find_overlap(TRAIN_TEXTS, [changed], near_threshold=None) == []
    assert find_overlap(TRAIN_TEXTS, [changed], near_threshold=0.5)[0]["kind"] == "near"
    with pytest.raises(ValueError, match="near_threshold"):
        find_overlap(TRAIN_TEXTS, OTHER_TEXTS, near_threshold=0)
    with pytest.raises(ValueError, match="ngram"):
        find_overlap(TRAIN_TEXTS, OTHER_TEXTS, ngram=0)
    with pytest.raises(TypeError):
        find_overlap("one string", OTHER_TEXTS)


def _shingles(text: str, n: int) -> set[str]:
    t = normalise_text(text)
    return {t[i:i + n] for i in range(len(t) - n + 1)}


def _brute_force(train, test, threshold, n):
    """Best match per test text by plain Python sets (exact first, then the first highest Jaccard)."""
    out = []
    for i, t in enumerate(test):
        nt = normalise_text(t)
        if not nt:
            continue
        exact = next((j for j, s in enumerate(train) if normalise_text(s) == nt), None)
        if exact is not None:
            out.append({"test_index": i, "train_index": exact, "kind": "exact", "similarity": 1.0})
            continue
        a = _shingles(t, n)
        best, arg = -1.0, None
        for j, s in enumerate(train):
            b = _shingles(s, n)
            if not a or not b:
                continue
            jac = len(a & b) / len(a | b)
            if jac > best:
                best, arg = jac, j
        if arg is not None and best >= threshold:
            out.append({"test_index": i, "train_index": arg, "kind": "near", "similarity": best})
    return out


@pytest.mark.parametrize("ngram,threshold", [(3, 0.5), (5, 0.3), (2, 0.7)])
def test_vectorised_search_equals_brute_force(ngram, threshold, monkeypatch):
    from synthdx.evaluate import contamination

    monkeypatch.setattr(contamination, "_BLOCK_CELLS", 50)  # several blocks, to test the blocking
    rng = random.Random(ngram)
    vocab = ["no", "effusion", "heart", "normal", "clear", "lungs", "mild", "a", "opacity", "is"]
    train = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 8))) for _ in range(40)]
    test = []
    for _ in range(30):
        if rng.random() < 0.5:  # a perturbed training text: near (or exact) duplicates at many similarities
            words = rng.choice(train).split()
            for _ in range(rng.randint(0, 3)):
                if words and rng.random() < 0.5:
                    words[rng.randrange(len(words))] = rng.choice(vocab)
                else:
                    words.insert(rng.randint(0, len(words)), rng.choice(vocab))
            test.append(" ".join(w.upper() if rng.random() < 0.2 else w for w in words) + rng.choice(["", ".", " !"]))
        else:
            test.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 8))))
    got = find_overlap(train, test, near_threshold=threshold, ngram=ngram)
    want = _brute_force(train, test, threshold, ngram)
    assert got == want
    assert {m["kind"] for m in got} == {"exact", "near"}  # the example exercises both


def test_guard_silent_on_disjoint_sets():
    assert guard_contamination(_recs(TRAIN_TEXTS, "tr"), _recs(OTHER_TEXTS, "te")) is None


def test_guard_fires_on_copied_records_naming_ids_not_text():
    train = _recs(TRAIN_TEXTS, "train-")
    test = [
        Record(id="fresh-0", text=OTHER_TEXTS[0]),
        Record(id="copy-exact", text=TRAIN_TEXTS[1]),
        Record(id="copy-case", text="  " + TRAIN_TEXTS[3].upper().replace(" ", "   ") + "\n"),
        Record(id="copy-near", text=TRAIN_TEXTS[5].replace("Stable", "Old").replace("edema", "oedema")),
        Record(id="empty", text=""),
    ]
    with pytest.raises(ContaminationError) as e:
        guard_contamination(train, test, what="IU X-ray test split")
    msg = str(e.value)
    assert isinstance(e.value, SynthdxError)
    assert msg.startswith("IU X-ray test split: 3 of 5 records appear in the training data")
    assert "2 exactly" in msg and "1 near-exactly" in msg
    assert "'copy-exact' -> train 'train-1' (exact, 1.000)" in msg
    assert "'copy-case' -> train 'train-3' (exact" in msg
    assert "'copy-near' -> train 'train-5' (near, 0.9" in msg
    assert "fresh-0" not in msg and "empty" not in msg
    # no record text (nor a recognisable piece of it) in the message
    for t in TRAIN_TEXTS + OTHER_TEXTS:
        for piece in (t[:20], t[-20:], "effusion", "catheter", "granuloma"):
            assert piece.lower() not in msg.lower()
    assert [(m["test_id"], m["train_id"], m["kind"]) for m in e.value.matches] == [
        ("copy-exact", "train-1", "exact"), ("copy-case", "train-3", "exact"), ("copy-near", "train-5", "near")]


def test_guard_lists_the_first_few_and_counts_the_rest():
    train = _recs(TRAIN_TEXTS, "tr")
    test = [Record(id=f"t{i}", text=TRAIN_TEXTS[i % len(TRAIN_TEXTS)]) for i in range(9)]
    with pytest.raises(ContaminationError, match=r"9 of 9 records .* and 4 more"):
        guard_contamination(train, test)


def test_guard_ignores_empty_text_records():
    train = [Record(id="a", text=""), Record(id="b", text=TRAIN_TEXTS[0])]
    test = [Record(id="c", text=""), Record(id="d", text="   ")]
    guard_contamination(train, test)


def test_duplicate_groups_are_connected_components():
    import itertools
    import random

    from synthdx.evaluate.contamination import _check_texts, duplicate_groups

    rng = random.Random(0)
    words = ["heart", "lungs", "clear", "normal", "size", "no", "effusion", "pneumothorax", "mild", "opacity"]
    base = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(15)]
    texts = base + [t.upper() + "." for t in base[:4]] + [t.replace("heart", "hearts", 1) for t in base[4:8]] + [""]
    groups = duplicate_groups(texts, 0.8)
    # brute force: union of all pairs with equal normalised text or shingle Jaccard >= 0.8
    norm = _check_texts(texts, "t")
    sh = [{t[k:k + 5] for k in range(len(t) - 4)} for t in norm]
    parent = list(range(len(texts)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in itertools.combinations(range(len(texts)), 2):
        same = norm[i] and norm[i] == norm[j]
        near = sh[i] and sh[j] and len(sh[i] & sh[j]) / len(sh[i] | sh[j]) >= 0.8
        if same or near:
            a, b = find(i), find(j)
            parent[max(a, b)] = min(a, b)
    assert groups == [find(i) for i in range(len(texts))]
    assert groups[15] == 0 and groups[-1] == len(texts) - 1  # an upper-cased copy joins; "" stays alone
