"""One self-contained HTML page per sweep: leaderboard, winners, confirmation, pictures.

Images are embedded as base64 and there is no script or external style, so the
page can be mailed, attached to a review or opened from MLflow's artifact view.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException

from analysis.confirm import ALPHAS, CONFIRM_FILE
from analysis.errors import AnalysisError
from analysis.leaderboard import ACCURACIES, SHARES, leaderboard
from analysis.plots import write_plots
from analysis.records import Sweep, log_files
from analysis.winners import winner

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
tr.winner { background: #fff4c2; font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.verdict { padding: 0.6em 1em; border-left: 4px solid #888; background: #f7f7f7; }
.verdict.yes { border-color: #2a7; } .verdict.no { border-color: #c33; }
"""


def _cell(value: Any) -> str:
    """Numbers (also formatted ones) right-aligned, words left-aligned."""
    text = html.escape(str(value))
    numeric = not isinstance(value, str) or value == "-" or value.lstrip("+-").replace(".", "", 1).isdigit()
    return f"<td>{text}</td>" if numeric else f'<td class="text">{text}</td>'



def table(rows: list[dict[str, Any]], highlight: list[bool] | None = None) -> str:
    """An HTML table from a list of same-keyed dicts; `highlight` marks rows (the winner)."""
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(key))}</th>" for key in rows[0])
    body = []
    for i, row in enumerate(rows):
        marked = ' class="winner"' if highlight and highlight[i] else ""
        body.append(f"<tr{marked}>" + "".join(_cell(value) for value in row.values()) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def leaderboard_html(board: pd.DataFrame) -> str:
    rows = []
    for _, row in board.iterrows():
        shown = row.to_dict()
        for column in (*ACCURACIES, *SHARES):
            shown[column] = _percent(row[column])
        shown["winner"] = "*" if row["winner"] else ""
        rows.append(shown)
    return table(rows, list(board["winner"]))


def image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def read_confirmation(sweep: Sweep, dataset: str) -> dict[str, Any] | None:
    """The confirm command's results for the dataset, if it was run."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = sweep.client.download_artifacts(
                sweep.parent(dataset)["run_id"], f"analysis/{CONFIRM_FILE}", folder
            )
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text())


def confirmation_html(result: dict[str, Any] | None) -> str:
    if result is None:
        return "<p>Not confirmed yet: run <code>python -m analysis confirm</code>.</p>"
    significant = result["significant"][str(ALPHAS[0])]
    pairs = [
        {
            "seed": pair["seed"],
            "winner test %": _percent(pair["winner_acc"]),
            "baseline test %": _percent(pair["baseline_acc"]),
            "only winner right": pair["mcnemar"]["only_a"],
            "only baseline right": pair["mcnemar"]["only_b"],
            "McNemar p": f"{pair['mcnemar']['pvalue']:.3g}",
        }
        for pair in result["pairs"]
    ]
    paired = result["paired"]
    return (
        f"<p>{html.escape(result['winner']['label'])} vs {html.escape(result['baseline']['label'])}<br>"
        f"Baseline: {html.escape(result['baseline_reason'])}.</p>"
        + table(pairs)
        + f"<p>Paired t-test p = {paired['ttest_pvalue']:.3g}, Wilcoxon p = {paired['wilcoxon_pvalue']:.3g}, "
        f"mean difference {paired['mean_difference']:+.2f} points, Cohen's d {paired['cohens_d']:.2f}.</p>"
        f'<p class="verdict {"yes" if significant else "no"}">{html.escape(result["verdict"])}</p>'
    )


def dataset_section(sweep: Sweep, dataset: str, images: list[Path]) -> str:
    parts = [f"<h2>{html.escape(dataset)}</h2>"]
    try:
        top = winner(sweep, dataset)
    except AnalysisError as error:
        parts.append(f"<p>{html.escape(str(error))}</p>")
    else:
        parts.append(
            f"<p>Winner: {html.escape(top.regime)} (run <code>{top.run_id}</code>), final validation "
            f"{_percent(top.val_acc)}%, test {_percent(top.test_acc)}%.</p>"
        )
        parts.append("<details><summary>winner's config</summary>"
                     + table([{"setting": k, "value": str(v)} for k, v in top.config.items()]) + "</details>")
        parts.append("<h3>Confirmation over fresh seeds</h3>" + confirmation_html(read_confirmation(sweep, dataset)))
    parts += ["<h3>Pictures</h3>", *map(image, images)]
    return "\n".join(parts)


def render(sweep: Sweep, images: dict[str, list[Path]]) -> str:
    """The whole page as a string."""
    parents = sweep.parents
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = table([{
        "dataset": dataset,
        "model": parents.loc[dataset, "model"],
        "code version": parents.loc[dataset, "code_version"],
        "regimes": ", ".join(parents.loc[dataset, "regimes"]),
        "trials": int((sweep.trials["dataset"] == dataset).sum()),
        "parent run": parents.loc[dataset, "run_id"],
    } for dataset in sweep.datasets])
    body = "\n".join(dataset_section(sweep, dataset, images.get(dataset, [])) for dataset in sweep.datasets)
    title = f"Sweep {html.escape(sweep.sweep_id)} ({html.escape(sweep.experiment)})"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>"
        f"<p>Generated {stamp}. Winners are picked on validation accuracy among completed trials; "
        f"test accuracy is reported, never used to choose.</p>{summary}"
        f"<h2>Leaderboard</h2><p>Accuracies (%) over completed trials; shares (%) of all finished trials; "
        f"the winner's row is marked.</p>{leaderboard_html(leaderboard(sweep))}{body}</body></html>"
    )


def write_report(sweep: Sweep, out: Path) -> Path:
    """Draw the pictures, write `report-<sweep_id>.html` and attach it to every parent run."""
    images = write_plots(sweep, out)
    path = out / f"report-{sweep.sweep_id}.html"
    path.write_text(render(sweep, images), encoding="utf-8")
    for dataset in sweep.datasets:
        log_files(sweep, dataset, [path])
    return path
