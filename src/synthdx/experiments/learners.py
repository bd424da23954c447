"""The learners a learning curve trains: each fits N labelled records and predicts the test texts.

All three share one call, `fit_predict(train, test_texts, workdir, seed) -> (multi-hot, scores)`,
so a curve can put them side by side: TF-IDF + logistic regression (seconds), a fine-tuned
MiniLM encoder classifier (minutes), and the fine-tuned LLM with constrained decoding (the
slowest; its model is deleted once the test part is predicted, a curve would otherwise keep
hundreds of MB a point).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import CurveLearner
from ..progress import log
from ..records import LabelSpace, Record


class Learner:
    def __init__(self, spec: CurveLearner, label_space: LabelSpace, task=None, batch_size: int = 32):
        self.spec = spec
        self.label_space = label_space
        self.task = task  # the LLM's MultiLabelTask
        self.batch_size = batch_size

    def fit_predict(self, train: Sequence[Record], test_texts: Sequence[str], workdir: Path,
                    seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        kind = self.spec.kind
        if kind == "tfidf":
            from ..baselines.tfidf import TfidfLogRegBaseline

            proba = TfidfLogRegBaseline(self.label_space, **self.spec.options).fit(train).predict_proba(test_texts)
            return (proba >= 0.5).astype(np.int8), proba
        if kind == "encoder":
            from ..baselines.encoder import EncoderClassifier

            clf = EncoderClassifier(self.label_space, seed=seed, **self.spec.options).fit(train)
            proba = clf.predict_proba(test_texts)
            return (proba >= 0.5).astype(np.int8), proba
        return self._llm(train, test_texts, workdir, seed)

    def _llm(self, train, test_texts, workdir: Path, seed: int):
        from ..config import TrainSection
        from ..distributed import on_all_ranks
        from ..evaluate import multi_hot
        from ..train.sft import TASK_FILE, TrainConfig, train as sft_train
        from .radiology import run_llm_predictions

        section = self.spec.train or TrainSection()
        cfg = TrainConfig(**{**section.model_dump(), "seed": seed})
        model_dir = workdir / "model"  # train() writes OUT/model (and OUT/checkpoints while it runs)

        def report(step: int, total: int, loss: float) -> None:
            if step % 5 == 0 or step == total:
                log.info("%s: training step %d/%d loss %.4f", self.spec.label, step, total, loss)

        if not (model_dir / TASK_FILE).exists():  # a model trained before an interruption is reused
            # under `synthdx curve` with several processes every rank trains (data-parallel)
            on_all_ranks(sft_train, train, self.task, workdir, cfg, main_kwargs={"progress": report})
        else:
            self.task.max_text_tokens = cfg.max_text_tokens
        preds, _ = run_llm_predictions(str(model_dir), self.task, list(test_texts), self.batch_size,
                                       f"{self.spec.label} predicts")
        shutil.rmtree(workdir, ignore_errors=True)
        names = self.label_space.names
        scores = np.array([[p.scores[n] for n in names] for p in preds], dtype=np.float64)
        return multi_hot([p.labels for p in preds], names), scores
