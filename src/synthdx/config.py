"""Experiment configs: YAML validated with pydantic, with messages that name the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    path: str = Field(description="Real labelled reports (IU X-ray CSV, or JSONL/CSV/Parquet with id, text, labels).")
    loader: Literal["auto", "iu-xray", "jsonl", "csv", "parquet"] = "auto"
    test_fraction: float = Field(0.3, gt=0, lt=1, description="Share of records (by hash of id) in the test part.")
    split_salt: str = "synthdx"
    max_train_pool: int | None = Field(None, ge=1, description="Use at most this many pool records for training.")
    near_duplicate: float = Field(0.9, gt=0, le=1, description=(
        "Texts this similar (character 5-gram Jaccard) form one duplicate group; a group stays on one "
        "side of every split, and the contamination guard refuses a test text this close to a training text."))
    validation_fraction: float = Field(0.0, ge=0, lt=1, description=(
        "Share of the pool (by hash of duplicate group) held out of training to tune per-label "
        "thresholds; its labels come from the teacher, never the curated ones. 0: no tuning."))


class TeacherConfig(_Strict):
    kind: Literal["rules", "none"] = Field(
        "rules", description="'rules' labels the real training pool; 'none' trains on synthetic reports only.")
    uncertain: Literal["positive", "negative", "ignore"] = "negative"


class SyntheticConfig(_Strict):
    n: int = Field(0, ge=0, description="Synthetic reports added to the training data.")
    seed: int = 0
    fit_to_teacher_labels: bool = Field(
        True, description="Learn label prevalence from the teacher-labelled pool (no curated labels used).")


class TrainSection(_Strict):
    model: str = "smollm2-135m"
    method: Literal["lora", "full"] = "lora"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_layers: int | None = Field(None, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float | None = Field(None, gt=0, description="None: 5e-4 for LoRA, 5e-5 for full.")
    warmup_steps: int = Field(10, ge=0)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    seed: int = 0
    save_every: int = Field(25, ge=0)
    max_text_tokens: int = Field(320, ge=16)
    parallel: Literal["auto", "ddp", "fsdp"] = Field("auto", description=(
        "With several processes (torchrun / accelerate launch): ddp replicates the model, fsdp shards it; "
        "auto: fsdp under an accelerate FSDP config, else ddp."))


class EvalConfig(_Strict):
    tfidf_baseline: bool = True
    zero_shot: bool = True
    free_generation_sample: int = Field(
        64, ge=0, description="Test records on which unconstrained generation is parsed to count invalid outputs.")
    batch_size: int = Field(32, ge=1)
    n_resamples: int = Field(1000, ge=100)
    seed: int = 0
    error_examples: int = Field(6, ge=0, description="Misclassified test records shown in the report.")
    include_text: bool = Field(False, description=(
        "Show the error examples' text in the report (off by default: private data stays out of reports)."))


class ExperimentConfig(_Strict):
    experiment: Literal["radiology"] = "radiology"
    title: str = "Chest X-ray finding detection"
    data: DataConfig
    teacher: TeacherConfig = TeacherConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    train: TrainSection = TrainSection()
    eval: EvalConfig = EvalConfig()

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("title must not be empty")
        return v


# ---------------------------------------------------------------- rare-disease differential diagnosis

class CasesConfig(_Strict):
    path: str = Field(description="Real cases: phenopacket zip (release layout), directory or JSONL.")
    max_model_cases: int | None = Field(
        None, ge=1, description="Score the LLM systems on this many cases (a fixed sample by hash of id); "
                                "the knowledge ranker is always scored on all. None: all cases.")
    sample_salt: str = "synthdx"


class KnowledgeConfig(_Strict):
    candidates: list[str] | None = Field(None, description="Candidate disease ids; None: every annotated OMIM disease.")
    branch: str | None = Field(None, description="Only diseases with a phenotype under this HPO term.")
    prior: Literal["uniform", "publications"] = Field("uniform", description=(
        "The knowledge ranker's prior over diseases (retrieval and fusion): uniform (as LIRICAL) or in "
        "proportion to 1 + the publications a disease's annotations cite. The other is reported as a reference."))


class HPOSyntheticConfig(_Strict):
    n_diseases: int | None = Field(None, ge=1, description="Train on patients of this many candidate diseases "
                                                           "(chosen by `diseases`); None: every candidate.")
    diseases: Literal["random", "best-studied"] = Field("random", description=(
        "Which n_diseases: a seeded random sample, or the n best-studied (most publications cited by their "
        "annotations: published cases come mostly from these)."))
    validation_diseases: Literal["uniform", "publications"] | None = Field(None, description=(
        "How the validation patients' diseases are drawn from all candidates: uniformly, or in proportion "
        "to 1 + their publications, as published cases arrive. None: uniform for diseases=random, "
        "publications for best-studied."))
    patients_per_disease: int = Field(5, ge=1)
    validation_patients: int = Field(200, ge=10, description="Held-out synthetic patients (diseases drawn from "
                                                             "all candidates) on which the fusion weight is chosen.")
    seed: int = 0
    generator: dict = Field(default_factory=dict, description="Options of HPOPatientGenerator.")


class RerankConfig(_Strict):
    top_k: int = Field(10, ge=10, description="The knowledge ranker's top K go to the model (rankings hold K >= 10).")
    weights: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.25, 0.5, 1.0, 2.0, float("inf")],
                                 description="Fusion weights tried on the synthetic validation patients "
                                             "(or the real tuning cases).")
    tuning_cases: int | None = Field(None, ge=10, description=(
        "Choose the fusion weight on this many labelled real cases instead of the synthetic validation "
        "patients, never among the cases scored. None: synthetic patients only, no real label is used before "
        "the test."))
    tuning_split: Literal["publications", "cases"] = Field("publications", description=(
        "How the tuning cases are set apart: whole publications, the last in the hash order of their "
        "groups, until there are at least tuning_cases (no scored case shares a publication with one); or "
        "the last tuning_cases cases in the hash order of ids (before 2026-12-07: cohorts on both sides)."))


class RankingEvalConfig(_Strict):
    zero_shot: bool = Field(True, description="Also rerank with the base model before fine-tuning.")
    constrained_beam: int = Field(0, ge=0, description=(
        "Also rank with the fine-tuned model alone by constrained decoding over every candidate name "
        "(beam search on a prefix tree of the names) with this beam width, to compare with "
        "retrieve-then-rerank; 0: off."))
    leave_out_own_publication: bool = True
    n_resamples: int = Field(1000, ge=100)
    seed: int = 0


class RareDdxConfig(_Strict):
    experiment: Literal["rare-ddx"]
    title: str = "Rare-disease differential diagnosis"
    data: CasesConfig
    knowledge: KnowledgeConfig = KnowledgeConfig()
    synthetic: HPOSyntheticConfig = HPOSyntheticConfig()
    train: TrainSection = TrainSection(max_text_tokens=256)
    rerank: RerankConfig = RerankConfig()
    eval: RankingEvalConfig = RankingEvalConfig()


# ---------------------------------------------------------------- learning curves

SourceKind = Literal["real", "teacher", "synthetic"]


class CurveSource(_Strict):
    """One curve's training data. 'real': pool records with their curated labels; 'teacher': the
    same records labelled by the rule teacher (curated labels unused); 'synthetic': generated
    records. A mix adds N records of `kind` to a fixed `base_n` records of `base`."""

    name: str
    kind: SourceKind
    base: SourceKind | None = None
    base_n: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _mix(self) -> "CurveSource":
        if (self.base_n is None) != (self.base is None):
            raise ValueError("a mix needs both base and base_n")
        return self


class CurveLearner(_Strict):
    kind: Literal["tfidf", "encoder", "llm"]
    name: str | None = Field(None, description="Label in tables and plots (default: from kind).")
    sizes: list[int] | None = Field(None, description="Train this learner only at these of the curve's sizes (cost).")
    seeds: list[int] | None = Field(None, description="Seeds for this learner (default: the config's seeds).")
    sources: list[str] | None = Field(None, description="Train this learner only on these sources (default: all).")
    options: dict = Field(default_factory=dict, description="encoder: epochs, max_length, batch_size, learning_rate.")
    train: TrainSection | None = Field(None, description="llm: the fine-tuning settings.")

    @property
    def label(self) -> str:
        return self.name or {"tfidf": "TF-IDF + LR", "encoder": "MiniLM encoder", "llm": "fine-tuned LLM"}[self.kind]


class CurveData(DataConfig):
    loader: Literal["auto", "iu-xray", "jsonl", "csv", "parquet", "mtsamples"] = "auto"
    min_label_count: int = Field(20, ge=1, description="mtsamples: drop specialties with fewer distinct texts.")


class CurveEval(_Strict):
    n_resamples: int = Field(1000, ge=100)
    seed: int = 0
    batch_size: int = Field(32, ge=1)


class CurvePatients(_Strict):
    """rare-ddx curve: the synthetic patients (`hpo-patients` generator) of the 'synthetic' source."""

    patients_per_disease: int = Field(1, ge=1, description="The pool holds max(sizes) patients (plus a mix's "
                                                           "base_n): this many each of a seeded random sample "
                                                           "of the candidate diseases.")
    validation_patients: int = Field(60, ge=10, description="Held-out synthetic patients (another seed) on which "
                                                            "each point's fusion weight is chosen.")
    seed: int = 0
    generator: dict = Field(default_factory=dict, description="Options of HPOPatientGenerator.")


class CurveRareDdx(_Strict):
    """rare-ddx curve: test sample, knowledge, synthetic patients and reranking."""

    test_cases: int | None = Field(150, ge=1, description="Score on this many cases of the test part (a fixed "
                                                          "sample by hash of id, covered or not); None: all.")
    sample_salt: str = "synthdx"
    knowledge: KnowledgeConfig = KnowledgeConfig()
    patients: CurvePatients = CurvePatients()
    rerank: RerankConfig = RerankConfig()
    zero_shot: bool = Field(False, description="Also rerank with the untrained base model (a reference line at "
                                               "N = 0; its fusion weight chosen on the synthetic validation "
                                               "patients like every point's).")


class CurveConfig(_Strict):
    experiment: Literal["curve"]
    title: str = "Learning curves"
    task: Literal["radiology", "mtsamples", "rare-ddx"]
    data: CurveData
    teacher: TeacherConfig = TeacherConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    rare_ddx: CurveRareDdx = Field(default_factory=CurveRareDdx, description=(
        "task rare-ddx only: the test part is split off by a hash of the publication (data.test_fraction, "
        "data.split_salt), the real pool is the other publications' cases."))
    sources: list[CurveSource]
    sizes: list[int] = Field(default_factory=lambda: [50, 100, 200, 300, 500, 1000])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    learners: list[CurveLearner]
    eval: CurveEval = CurveEval()

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError("sizes must be positive numbers of training records")
        return sorted(set(v))

    @field_validator("sources")
    @classmethod
    def _names(cls, v: list[CurveSource]) -> list[CurveSource]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError("source names must be unique")
        for s in v:
            if s.base is not None and s.base == s.kind:
                raise ValueError(f"source {s.name!r}: a mix adds records of another kind than its base")
        return v

    @field_validator("learners")
    @classmethod
    def _learners(cls, v: list[CurveLearner], info) -> list[CurveLearner]:
        labels = [lr.label for lr in v]
        if len(set(labels)) != len(labels):
            raise ValueError("learners need distinct names (set `name`)")
        known = {s.name for s in info.data.get("sources") or []}
        sizes = set(info.data.get("sizes") or [])
        for lr in v:
            extra = sorted(set(lr.sizes or []) - sizes)
            if extra:
                raise ValueError(f"learner {lr.label!r}: sizes {extra} are not among the curve's sizes")
            unknown = sorted(set(lr.sources or []) - known)
            if unknown:
                raise ValueError(f"learner {lr.label!r} names unknown sources: {', '.join(unknown)}")
        return v

    @model_validator(mode="after")
    def _rare_ddx(self) -> "CurveConfig":
        if self.task != "rare-ddx":
            return self
        bad = [lr.label for lr in self.learners if lr.kind != "llm"]
        if bad:
            raise ValueError(f"task rare-ddx trains language models only (learner kind llm); not: {', '.join(bad)}")
        kinds = {s.kind for s in self.sources} | {s.base for s in self.sources if s.base}
        if "teacher" in kinds:
            raise ValueError("task rare-ddx has no teacher: sources are real cases or synthetic patients")
        return self


# ---------------------------------------------------------------- joint multi-task training

class RadiologyTaskEntry(_Strict):
    """One task of a mixture: IU X-ray finding detection, with the sections of a radiology config
    (data, teacher, synthetic, eval); the training settings are the mixture's shared `train`."""

    task: Literal["radiology"]
    weight: float = Field(gt=0, description="Share of the joint training examples (normalised over the tasks).")
    max_text_tokens: int | None = Field(None, ge=16, description="Prompt text cut; None: train.max_text_tokens.")
    data: DataConfig
    teacher: TeacherConfig = TeacherConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    eval: EvalConfig = EvalConfig()

    @field_validator("data")
    @classmethod
    def _no_validation(cls, v: DataConfig) -> DataConfig:
        if v.validation_fraction:
            raise ValueError("validation_fraction must be 0 in a mixture (per-label threshold tuning is not part "
                             "of the mixture report)")
        return v

    def experiment(self, train: TrainSection, title: str) -> ExperimentConfig:
        """This task as a stand-alone radiology config (the stages of `experiments.radiology` take it)."""
        mtt = self.max_text_tokens or train.max_text_tokens
        return ExperimentConfig(title=title, data=self.data, teacher=self.teacher, synthetic=self.synthetic,
                                train=train.model_copy(update={"max_text_tokens": mtt}), eval=self.eval)


class RareDdxTaskEntry(_Strict):
    """One task of a mixture: rare-disease differential diagnosis, with the sections of a rare-ddx
    config (data, knowledge, synthetic, rerank, eval)."""

    task: Literal["rare-ddx"]
    weight: float = Field(gt=0, description="Share of the joint training examples (normalised over the tasks).")
    max_text_tokens: int | None = Field(256, ge=16, description="Prompt text cut; None: train.max_text_tokens.")
    data: CasesConfig
    knowledge: KnowledgeConfig = KnowledgeConfig()
    synthetic: HPOSyntheticConfig = HPOSyntheticConfig()
    rerank: RerankConfig = RerankConfig()
    eval: RankingEvalConfig = RankingEvalConfig()

    @model_validator(mode="after")
    def _synthetic_weights_only(self) -> "RareDdxTaskEntry":
        if self.rerank.tuning_cases:
            raise ValueError("rerank.tuning_cases is for the rare-ddx experiment alone; a mixture chooses "
                             "its fusion weights on synthetic patients")
        return self

    def experiment(self, train: TrainSection, title: str) -> RareDdxConfig:
        mtt = self.max_text_tokens or train.max_text_tokens
        return RareDdxConfig(experiment="rare-ddx", title=title, data=self.data, knowledge=self.knowledge,
                             synthetic=self.synthetic, train=train.model_copy(update={"max_text_tokens": mtt}),
                             rerank=self.rerank, eval=self.eval)


MixtureTask = Annotated[RadiologyTaskEntry | RareDdxTaskEntry, Field(discriminator="task")]


class MixtureSection(_Strict):
    n_examples: int | None = Field(None, ge=1, description=(
        "Joint training examples in all, split over the tasks by weight (largest remainder). None: as many as "
        "the pools give with no example drawn twice (the task whose pool is smallest for its weight sets it)."))
    seed: int = Field(0, description="Seeds which pool examples are drawn (a seeded permutation per task).")
    alone: bool = Field(True, description=(
        "Also train each task alone on exactly the examples of that task the joint run drew (same settings), "
        "and compare it with the joint model on that task's test data."))
    alone_steps: Literal["joint", "epochs"] = Field("joint", description=(
        "How long a task trains alone. joint: as many optimiser steps as the joint model (so more passes over "
        "its fewer examples: the same compute, and a difference is not just the joint model's extra steps); "
        "epochs: the same train.epochs over its examples (fewer steps: the same data exposure)."))


class MixtureConfig(_Strict):
    experiment: Literal["mixture"]
    title: str = "Joint multi-task training"
    tasks: list[MixtureTask]
    mixture: MixtureSection = MixtureSection()
    train: TrainSection = TrainSection()

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list) -> list:
        if len(v) < 2:
            raise ValueError("a mixture needs at least two tasks")
        names = [t.task for t in v]
        if len(set(names)) != len(names):
            raise ValueError(f"each task may appear once (got {', '.join(names)})")
        return v

    @property
    def weights(self) -> dict[str, float]:
        total = sum(t.weight for t in self.tasks)
        return {t.task: t.weight / total for t in self.tasks}


def _format_errors(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def parse_overrides(overrides: list[str]) -> dict:
    """['train.epochs=2', 'data.test_fraction=0.2'] -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        elif isinstance(v, dict) and isinstance(base.get(k), list) and all(str(i).isdigit() for i in v):
            # tasks.1.weight=2: an index into a list of sections
            for i, sub in v.items():
                i = int(i)
                if i >= len(base[k]):
                    raise ConfigError(f"override {k}.{i}: the list has {len(base[k])} items")
                if isinstance(sub, dict) and isinstance(base[k][i], dict):
                    _merge(base[k][i], sub)
                else:
                    base[k][i] = sub
        else:
            base[k] = v
    return base


CONFIG_KINDS = {"radiology": ExperimentConfig, "rare-ddx": RareDdxConfig, "curve": CurveConfig,
                "mixture": MixtureConfig}


def load_config(path: str | Path, overrides: list[str] | None = None
                ) -> ExperimentConfig | RareDdxConfig | CurveConfig | MixtureConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    raw = _merge(raw, parse_overrides(overrides or []))
    try:
        kind = CONFIG_KINDS.get(raw.get("experiment"), ExperimentConfig)
        cfg = kind.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: invalid config\n{_format_errors(e)}") from None
    for section in ([t.data for t in cfg.tasks] if isinstance(cfg, MixtureConfig) else [cfg.data]):
        section.path = str(resolve_data_path(section.path, path))
    return cfg


def resolve_data_path(p: str, config_path: Path) -> Path:
    """Relative data paths are tried from the working directory, then from the config's folder and
    its parent (so `../shared/...` works from the repository root and from `configs/`)."""
    cand = Path(p).expanduser()
    if cand.is_absolute():
        return cand
    for base in (Path.cwd(), config_path.parent, config_path.parent.parent):
        if (base / cand).exists():
            return (base / cand).resolve()
    return cand
