"""One entry point: `synthdx <verb>`. Every verb explains itself with --help."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import SynthdxError
from .progress import console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train small clinical language models on synthetic data; prove them on real data.")

QUICKSTART_CONFIG = Path(__file__).resolve().parent / "resources" / "quickstart.yaml"


def _setup_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # run.log takes INFO; the console only with -v
        handler.setLevel(level)
    # Third-party progress bars and warnings would drown ours; errors still show.
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _fail(e: Exception) -> None:
    console.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(2)


@app.command()
def run(config: Path = typer.Argument(..., help="Experiment config (YAML)."),
        out: Path = typer.Option(..., "--out", "-o", help="Run directory (created; an existing one is resumed)."),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: train.epochs=2."),
        verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Run an experiment config end to end: data, teacher, training, prediction, evaluation, report.
    Under torchrun / accelerate launch, training is data-parallel over the processes and every other
    stage runs once, on rank 0."""
    _setup_logging(verbose)
    from . import distributed
    from .config import CurveConfig, MixtureConfig, RareDdxConfig, load_config

    try:
        cfg = load_config(config, set_ or [])

        def experiment() -> None:
            if isinstance(cfg, MixtureConfig):
                from .experiments.mixture import run_mixture

                run_mixture(cfg, out)
            elif isinstance(cfg, RareDdxConfig):
                from .experiments.rare_ddx import run_rare_ddx

                run_rare_ddx(cfg, out)
            elif isinstance(cfg, CurveConfig):
                from .experiments.curve import run_curve

                run_curve(cfg, out)
            else:
                from .experiments.radiology import run_radiology

                run_radiology(cfg, out)

        # torchrun / accelerate: rank 0 runs the experiment; the other ranks join its training
        # (data-parallel) and otherwise wait, so no stage runs twice or writes a file twice.
        distributed.lead(experiment)
    except (SynthdxError, ValueError, FileNotFoundError) as e:
        _fail(e)
    except distributed.RankZeroFailed:
        raise typer.Exit(2) from None  # rank 0 printed the error


@app.command()
def curve(config: Path = typer.Argument(..., help="Learning-curve config (YAML, experiment: curve)."),
          out: Path = typer.Option(..., "--out", "-o", help="Run directory (created; an existing one is resumed)."),
          set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: sizes=[50,100]."),
          report_only: bool = typer.Option(False, "--report-only", help="Train nothing: report the finished points."),
          verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Learning curves: train each learner on N = 50, 100, ... records of each data source (real
    labels, teacher labels, synthetic, mixes), several seeds a point, score on the real test part,
    and report the curves with bands and how many real examples each source is worth."""
    from . import distributed
    from .config import CurveConfig, load_config

    try:
        cfg = load_config(config, set_ or [])
        if not isinstance(cfg, CurveConfig):
            raise SynthdxError(f"{config}: not a learning-curve config (it needs 'experiment: curve'); "
                               "use `synthdx run` for other experiments")
        _setup_logging(verbose)
        from .experiments.curve import run_curve

        # torchrun / accelerate: as `run`, rank 0 drives the curve and every rank joins each
        # model's training (data-parallel); data, scoring and the report happen once
        distributed.lead(lambda: run_curve(cfg, out, report_only))
    except (SynthdxError, ValueError, FileNotFoundError) as e:
        _fail(e)
    except distributed.RankZeroFailed:
        raise typer.Exit(2) from None  # rank 0 printed the error


@app.command()
def quickstart(out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Run directory."),
               data: Optional[Path] = typer.Option(None, help="IU X-ray reports CSV (default: ../shared/data/...)."),
               set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key."),
               verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """The radiology quickstart: IU X-ray reports, rule teacher, synthetic reports, fine-tuned
    SmolLM2-135M, evaluated against curated labels on the held-out part (~20 min on 2 CPU cores)."""
    overrides = list(set_ or [])
    if data is not None:
        overrides.append(f"data.path={data}")
    run(QUICKSTART_CONFIG, out, overrides, verbose)


@app.command()
def label(input: Path = typer.Option(..., "--input", "-i", help="Reports: JSONL/CSV/Parquet or indiana_reports CSV."),
          output: Path = typer.Option(..., "--output", "-o", help="JSONL with id and labels per record."),
          teacher: str = typer.Option("rules", help="Teacher: 'rules' (CheXpert-style phrases + medspaCy ConText)."),
          uncertain: str = typer.Option("negative", help="Uncertain mentions: positive, negative or ignore."),
          text_column: str = typer.Option("text", help="Text column for generic files."),
          id_column: str = typer.Option("id", help="Id column for generic files.")) -> None:
    """Label unlabelled reports with a teacher: synthetic labels for training. Under torchrun /
    accelerate launch each process labels a share of the reports and rank 0 writes the file."""
    _setup_logging(False)
    from . import distributed
    from .datasets import ColumnMap, load_records
    from .io import write_jsonl
    from .teachers.radiology_rules import RadiologyRuleLabeler

    try:
        if teacher != "rules":
            raise SynthdxError(f"unknown teacher {teacher!r}; available: rules")
        if uncertain not in ("positive", "negative", "ignore"):
            raise SynthdxError("--uncertain must be positive, negative or ignore")
        records = load_records(input, columns=ColumnMap(id=id_column, text=text_column, labels=None))
        distributed.init()
        labelled = RadiologyRuleLabeler(uncertain=uncertain).label(distributed.shard(records))
        rows = distributed.gather_ordered(len(records), [
            {"id": r.id, "labels": r.labels,
             **({"masked_labels": r.meta["masked_labels"]} if "masked_labels" in r.meta else {})} for r in labelled])
        if rows is not None:  # rank 0 (or the only process) writes
            n = write_jsonl(output, rows)
            console.print(f"labelled {n} records -> {output}")
    except (SynthdxError, ValueError) as e:
        _fail(e)


@app.command()
def synth(generator: str = typer.Option("radiology-reports", help="radiology-reports or hpo-patients."),
          n: int = typer.Option(1000, "--n", "-n", min=1,
                                help="Number of records (hpo-patients: patients per disease)."),
          seed: int = typer.Option(0, help="Random seed (same seed, same records)."),
          diseases: Optional[str] = typer.Option(None, help="hpo-patients: comma-separated disease ids "
                                                 "(default: every annotated OMIM disease)."),
          branch: Optional[str] = typer.Option(None, help="hpo-patients: only diseases with a feature under this HPO term."),
          output: Path = typer.Option(..., "--output", "-o", help="JSONL of records: id, text, labels, meta.")) -> None:
    """Generate labelled synthetic records: chest X-ray reports, or rare-disease patients from HPO
    annotations (rows: the patient's phenotype, its rendered summary as text, the disease as label).
    Every record is seeded by (seed, its index): under torchrun / accelerate launch each process makes
    a share and rank 0 writes the same file one process would."""
    from . import distributed
    from .io import write_jsonl

    try:
        if generator == "radiology-reports":
            from .synth.radiology_reports import RadiologyReportGenerator

            distributed.init()
            mine = RadiologyReportGenerator(seed=seed).generate(n, indices=distributed.shard_positions(n))
            rows = distributed.gather_ordered(n, [r.to_dict() for r in mine])
        elif generator == "hpo-patients":
            from .knowledge.hpo import load_hpo
            from .synth.hpo_patients import HPOPatientGenerator
            from .tasks.rare_ddx_render import render_summary

            knowledge = load_hpo()
            ids = [d.strip() for d in diseases.split(",") if d.strip()] if diseases else None
            try:
                chosen = knowledge.candidates(ids, branch)
            except KeyError as e:
                raise SynthdxError(str(e.args[0])) from None
            gen = HPOPatientGenerator(knowledge, seed=seed)
            usable = gen.usable_diseases(chosen)
            if not usable:
                raise SynthdxError("none of the chosen diseases has a phenotype with a frequency above 0")
            distributed.init()
            units = [(d, i) for d in usable for i in range(n)]  # gen.generate(usable, n)'s order
            cases = [gen.patient_case(d, i) for d, i in distributed.shard(units)]
            rows = distributed.gather_ordered(len(units), [
                {**c.to_dict(), "id": c.id, "text": render_summary(c.patient, knowledge, seed=seed),
                 "labels": list(c.gold)} for c in cases])
        else:
            raise SynthdxError(f"unknown generator {generator!r}; available: radiology-reports, hpo-patients")
        if rows is not None:  # rank 0 (or the only process) writes
            write_jsonl(output, rows)
            console.print(f"wrote {len(rows)} synthetic records -> {output}")
    except (SynthdxError, ValueError) as e:
        _fail(e)


@app.command()
def predict(model: str = typer.Option(..., "--model", "-m", help="A trained model directory (RUN/model), or a base model."),
            input: Path = typer.Option(..., "--input", "-i", help="JSONL rows {id, text}, or any loader's file."),
            output: Path = typer.Option(..., "--output", "-o", help="JSONL rows {id, labels, scores}."),
            task: Optional[str] = typer.Option(None, help="Task (default: the one the model was trained for)."),
            batch_size: int = typer.Option(32, min=1),
            text_column: str = typer.Option("text"), id_column: str = typer.Option("id"),
            verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Predict labels (with per-label scores) for every input row; with --task rare-ddx (or a model
    trained for it), rank diseases for every phenopacket (zip, directory or JSONL). Rows are written
    as batches finish; an interrupted run resumes after the last written row. Under torchrun /
    accelerate launch each process predicts a share and rank 0 merges them, in input order."""
    _setup_logging(verbose)
    from .infer.batch import is_ranking_model, predict_file, rank_file

    try:
        if task == "rare-ddx" or (task is None and is_ranking_model(model)):
            rank_file(model, input, output)
            return
        predict_file(model, input, output, task=task, batch_size=batch_size,
                     id_column=id_column, text_column=text_column)
    except (SynthdxError, ValueError) as e:
        _fail(e)


@app.command("eval")
def eval_(predictions: List[Path] = typer.Argument(..., help="Prediction JSONL files (rows {id, labels}); "
                                                   "the file name (without .jsonl) names the system."),
          gold: Path = typer.Option(..., "--gold", "-g", help="Curated labels: indiana_reports CSV or JSONL {id, labels}."),
          train: Optional[Path] = typer.Option(None, "--train", help="The systems' training records (JSONL/CSV): "
                                               "refuse to score test records that appear in them (near-)exactly."),
          near_duplicate: float = typer.Option(0.9, help="Character 5-gram Jaccard from which a text counts as a copy."),
          out: Path = typer.Option(Path("eval"), "--out", "-o", help="Where the report goes."),
          task: str = typer.Option("radiology"), n_resamples: int = typer.Option(1000), seed: int = typer.Option(0)) -> None:
    """Score prediction files against curated labels: micro/macro/per-label P/R/F1 with bootstrap CIs,
    and, for two or more files, paired tests of every pair (bootstrap of the difference, McNemar per label)."""
    from .datasets import load_records
    from .evaluate import evaluate_system, format_table, multi_hot, write_report
    from .evaluate.contamination import guard_contamination
    from .evaluate.evidence import paired_section
    from .evaluate.paired import compare_systems
    from .io import read_jsonl
    from .tasks.multilabel import get_task

    try:
        names = get_task(task).label_space.names
        gold_records = {r.id: r for r in load_records(gold) if r.labels is not None}
        rows_by_system = {path.stem: {str(row["id"]): row for _, row in read_jsonl(path)} for path in predictions}
        ids = [i for i in gold_records if all(i in rows for rows in rows_by_system.values())]
        if not ids:
            raise SynthdxError(f"no ids of {gold} are in every prediction file")
        if train is not None:
            guard_contamination(load_records(train), [gold_records[i] for i in ids], near_duplicate,
                                what=f"the records of {gold}")
        y_true = multi_hot([gold_records[i].labels for i in ids], names)
        preds = {name: multi_hot([rows[i]["labels"] for i in ids], names) for name, rows in rows_by_system.items()}
        systems = {name: evaluate_system(y_true, p, names, n_resamples=n_resamples, seed=seed)
                   for name, p in preds.items()}
        paired = compare_systems(y_true, preds, None, names, n_resamples=n_resamples, seed=seed) if len(preds) > 1 else []
        write_report(out, "Evaluation against curated labels", systems, names,
                     extra={"records scored (ids in every file)": len(ids)},
                     sections=[paired_section(paired)] if paired else None, evidence={"paired": paired})
        console.print(format_table(systems), soft_wrap=True, markup=False)
        for c in paired:
            d = c["micro_f1"]
            console.print(f"{c['system_a']} - {c['system_b']}: micro-F1 {d['diff']:+.3f} "
                          f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], p = {d['p_value']:.4f}", markup=False)
    except (SynthdxError, ValueError, KeyError) as e:
        _fail(e)


@app.command()
def export(run_dir: Path = typer.Argument(..., help="A finished run directory (RUN/model, metrics.json, provenance.json)."),
           out: Path = typer.Option(..., "--out", "-o", help="Export directory (written as OUT.partial, then renamed)."),
           force: bool = typer.Option(False, "--force", help="Replace an existing export directory."),
           model: Optional[str] = typer.Option(None, "--model", help="The model folder inside the run (default: "
                                               "model; a mixture run: joint, or alone/<task>)."),
           verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Export a run's model to share: plain safetensors weights + tokenizer + task spec (a LoRA adapter
    is merged), the run's provenance.json, and a model card (README.md) with the task, training data,
    real-data results with CIs, usage and limitations."""
    _setup_logging(verbose)
    from .export import export_run

    try:
        path = export_run(run_dir, out, force=force, model=model)
        console.print(f"exported {run_dir} -> {path} (model card: {path / 'README.md'})", soft_wrap=True)
    except (SynthdxError, ValueError, OSError) as e:
        _fail(e)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: synthdx against the plain path a user would "
                        "write, measured side by side in one run; prints a table, writes JSON.")
app.add_typer(bench_app, name="bench")


@bench_app.command("train")
def bench_train(out: Path = typer.Option(..., "--out", "-o", help="Result JSON."),
                model: str = typer.Option("smollm2-135m", help="Base model (embedded default, directory or hub id)."),
                methods: str = typer.Option("lora,full", help="Comma-separated: lora, full."),
                steps: int = typer.Option(4, min=1, help="Timed optimiser steps per path (after one warm-up step)."),
                batch_size: int = typer.Option(8, min=1, help="Examples per step (both paths)."),
                pool: int = typer.Option(256, min=1, help="Examples both paths draw their batches from."),
                lora_dropout: Optional[float] = typer.Option(
                    None, min=0.0, max=0.99, help="Both paths' LoRA dropout (default: train's, 0.05)."),
                profile: bool = typer.Option(False, "--profile", help=(
                    "Also run our path under the torch profiler (separately) and print its top operators.")),
                verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Training tokens/s, peak memory and MFU: synthdx's loop vs transformers Trainer + peft (fp32,
    defaults), on the same examples, in one run; `speedup` = ours / plain."""
    _setup_logging(verbose)
    from .bench.train import run_train_bench

    try:
        run_train_bench(out, model=model, methods=[m.strip() for m in methods.split(",") if m.strip()],
                        steps=steps, batch_size=batch_size, pool=pool, lora_dropout=lora_dropout,
                        profile=profile)
    except (SynthdxError, ValueError) as e:
        _fail(e)


@bench_app.command("predict")
def bench_predict(out: Path = typer.Option(..., "--out", "-o", help="Result JSON."),
                  model: str = typer.Option("smollm2-135m", help="Model (embedded default, directory or hub id)."),
                  tasks: str = typer.Option("radiology,rare-ddx", help="Comma-separated: radiology, rare-ddx."),
                  records: int = typer.Option(48, min=2, help="Radiology reports (both paths predict the same ones)."),
                  rare_records: int = typer.Option(8, min=2, help="Rare-disease cases (both paths score the same ones)."),
                  batch_size: int = typer.Option(16, min=1, help="Our path's batch size."),
                  rounds: int = typer.Option(1, min=1, help="Groups the records are split into; the paths alternate by group (each group is sorted and batched on its own)."),
                  precision: str = typer.Option("auto", help="Our path's precision: auto (bf16 autocast where the CPU runs bf16 natively), fp32, bf16. The plain path is fp32."),
                  verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Prediction records/s: synthdx's batched path vs `model.generate` one record at a time
    (radiology) and one full forward pass per candidate (rare-ddx), on the same records, in one
    run; `speedup` = ours / plain. With a base model the plain path's generation budget is our
    answer's length (it would not stop); `--model RUN/model` benchmarks a trained model."""
    _setup_logging(verbose)
    from .bench.predict import run_predict_bench

    try:
        run_predict_bench(out, model=model, tasks=[t.strip() for t in tasks.split(",") if t.strip()],
                          records=records, rare_records=rare_records, batch_size=batch_size, rounds=rounds,
                          precision=precision)
    except (SynthdxError, ValueError) as e:
        _fail(e)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
