"""A run directory remembers its config: resuming with the same one works, another one is refused
(with the differing keys named), and a setting synthdx added after the run started is no difference."""

from __future__ import annotations

import pytest
import yaml

from synthdx.config import CurveConfig
from synthdx.errors import ConfigError
from synthdx.experiments.common import claim_run_dir

RAW = {"experiment": "curve", "task": "radiology", "data": {"path": "reports.csv"},
       "sources": [{"name": "real", "kind": "real"}], "learners": [{"kind": "tfidf"}]}


def test_same_config_resumes_another_is_refused(tmp_path):
    claim_run_dir(tmp_path, CurveConfig.model_validate(RAW))
    claim_run_dir(tmp_path, CurveConfig.model_validate(RAW))  # the same: fine
    with pytest.raises(ConfigError, match=r"differs in: sizes"):
        claim_run_dir(tmp_path, CurveConfig.model_validate({**RAW, "sizes": [50]}))


def test_a_setting_added_since_the_run_started_is_no_difference(tmp_path):
    cfg = CurveConfig.model_validate(RAW)
    recorded = cfg.model_dump()
    del recorded["eval"]["batch_size"]  # as written by a synthdx that did not know this setting yet
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(recorded, sort_keys=False))
    claim_run_dir(tmp_path, cfg)
    # but a recorded value that differs from today's is still refused
    recorded["eval"]["seed"] = 7
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(recorded, sort_keys=False))
    with pytest.raises(ConfigError, match=r"eval\.seed"):
        claim_run_dir(tmp_path, cfg)
