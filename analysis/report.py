"""One self-contained HTML page per sweep: the verdicts first, then how they were reached.

Order of the page: each dataset's verdict (headline, per-regime table with
95% intervals and Holm-corrected p-values, McNemar's tables per seed pair),
the protocol the sweep followed (its `protocol.json`), the leaderboard, then
per dataset the configs, any confirmation re-run by hand and the pictures.
Images are embedded as base64 and nothing is fetched from elsewhere, so the
page can be mailed, attached to a review or opened from MLflow's artifact
view offline. Its one script is plotly.js, inlined once, for the interactive
parallel coordinates per dataset (axes can be reordered, ranges brushed).
"""

from __future__ import annotations

import base64
import datetime
import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.confirm import BASELINES, confirm_file
from analysis.leaderboard import display, leaderboard
from analysis.plots import interactive_parallel, write_plots
from analysis.records import ANALYSIS_FOLDER, Sweep, log_files
from analysis.winners import (
    NEAR_CHANCE,
    PENDING,
    DatasetVerdict,
    confirmed_configs,
    dataset_verdict,
)
from search import schema

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
tr.winner { background: #fff4c2; font-weight: 600; } tr.tie { background: #eef4ff; }
tr.near-chance { background: #fdecec; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.verdict { padding: 0.6em 1em; border-left: 5px solid #888; background: #f7f7f7; }
.verdict.winner { border-color: #2a7; } .verdict.tie { border-color: #37c; }
.verdict.no_result, .verdict.pending, .verdict.no_trustworthy_winner { border-color: #c33; }
.alarm { padding: 0.6em 1em; border: 2px solid #c33; background: #fdecec; font-weight: 600; }
.note { color: #555; font-size: 0.9em; }
"""


ROW_CLASSES = {schema.WINNER: "winner", schema.TIE: "tie", NEAR_CHANCE: "near-chance"}  # a row's mark -> style


def _cell(value: Any) -> str:
    """Numbers (also formatted ones) right-aligned, words left-aligned."""
    text = html.escape(str(value))
    return f"<td>{text}</td>" if _numeric(value) else f'<td class="text">{text}</td>'


def _numeric(value: Any) -> bool:
    """A number, or text that starts with one ("95.68 [93.91, 97.45]", "1.01e-07", "-")."""
    if not isinstance(value, str):
        return True
    first = value.split(" ")[0]
    try:
        float(first)
    except ValueError:
        return first == "-"
    return True


def table(rows: list[dict[str, Any]], classes: list[str] | None = None) -> str:
    """An HTML table from a list of same-keyed dicts; `classes` styles rows (winner, tie)."""
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(key))}</th>" for key in rows[0])
    body = []
    for i, row in enumerate(rows):
        marked = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{marked}>" + "".join(_cell(value) for value in row.values()) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _interval(mean: Any, low: Any, high: Any, *, signed: bool = False) -> str:
    mean, low, high = _number(mean), _number(low), _number(high)
    if math.isnan(mean):
        return "-"
    form = "+.2f" if signed else ".2f"
    ends = f"[{low:{form}}, {high:{form}}]" if math.isfinite(low) and math.isfinite(high) else "[n/a]"
    return f"{mean:{form}} {ends}"


def _p(value: Any) -> str:
    return "-" if value is None or math.isnan(float(value)) else f"{float(value):.3g}"


# -- the verdict ---------------------------------------------------------------------------
def verdict_rows(verdict: DatasetVerdict, regimes: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per regime: its confirmation and its place in the verdict."""
    rows, classes = [], []
    for regime in regimes:
        arm, comparison = verdict.arm(regime), verdict.comparison(regime)
        mark = verdict.mark(regime)
        gap = ("leader" if regime == verdict.detail.get("leader") else "-")
        if comparison is not None:
            gap = _interval(comparison["gap"]["mean"], comparison["gap"]["low"], comparison["gap"]["high"],
                            signed=True)
        rows.append({
            "regime": regime,
            "seeds": ", ".join(map(str, arm["seeds"])) if arm else "-",
            "mean test % [95% CI]": _interval(arm["test"]["mean"], arm["test"]["low"], arm["test"]["high"])
            if arm else "no result",
            "test % per seed": ", ".join(f"{v:.2f}" for v in arm.get("test_by_seed", [])) if arm else "-",
            "mean val %": f"{arm['mean_val']:.2f}" if arm else "-",
            "gap: leader - this, points [95% CI]": gap,
            "paired t-test p": _p(comparison["pvalue"]) if comparison else "-",
            "Holm p": _p(comparison["pvalue_holm"]) if comparison else "-",
            "verdict": mark,
        })
        classes.append(ROW_CLASSES.get(mark, ""))
    return rows, classes


def mcnemar_html(verdict: DatasetVerdict) -> str:
    """McNemar's exact test for every seed pair of the leader and each other regime."""
    leader = verdict.detail.get("leader")
    parts = []
    for comparison in verdict.detail["comparisons"]:
        tables = comparison.get("mcnemar") or []
        if not tables:
            continue
        other = comparison["regime"]
        rows = [{
            "seed": seed,
            "both right": t["both_correct"],
            f"only {leader} right": t["only_a"],
            f"only {other} right": t["only_b"],
            "both wrong": t["both_wrong"],
            "exact p": _p(t["pvalue"]),
        } for seed, t in zip(comparison["seeds"], tables, strict=False)]
        parts.append(f"<p>McNemar's exact test per seed pair, {html.escape(str(leader))} vs "
                     f"{html.escape(other)} (same test examples, same seed):</p>" + table(rows))
    if not parts and verdict.detail["comparisons"]:
        return ('<p class="note">No McNemar tables: they need the per-example predictions the sweep '
                f"keeps only in its {schema.VERDICT_FILE}, which this dataset lacks.</p>")
    return "".join(parts)


# What each outcome (schema.VERDICTS, and PENDING) means, under the dataset's headline.
NOTES = {
    schema.WINNER: "A winner: significantly better than every other regime (Holm-corrected p < alpha).",
    schema.TIE: "No regime is significantly better than every other: the leader is not a winner.",
    schema.NO_RESULT: "No regime completed a confirmation run.",
    schema.NO_TRUSTWORTHY_WINNER: "No trustworthy winner: the leader's mean confirmed test accuracy is at or "
                                  "near chance, so whatever the tests say, nothing here is a result and "
                                  "the leader's config must not be used as a winner's.",
    PENDING: "The sweep has not recorded a verdict for this dataset (still running or interrupted); "
             "the numbers below are provisional and nobody is a winner.",
}
UNKNOWN_NOTE = "An outcome this version of the analysis does not know: nobody is marked winner."


def verdict_html(sweep: Sweep, dataset: str, verdict: DatasetVerdict) -> str:
    regimes = list(sweep.parent(dataset)[schema.REGIMES]) or [arm["regime"] for arm in verdict.detail["arms"]]
    rows, classes = verdict_rows(verdict, regimes)
    source = (f"from the sweep's {schema.VERDICT_FILE}" if verdict.recorded
              else "recomputed from the confirmation runs recorded so far")
    note = NOTES.get(verdict.status, UNKNOWN_NOTE)
    chance = f"<br>{html.escape(verdict.chance_text())}." if verdict.chance_text() else ""
    status_class = verdict.status if verdict.status in NOTES else schema.NO_RESULT
    return (
        f"<h3>{html.escape(dataset)}: {html.escape(verdict.title())}</h3>"
        f'<p class="verdict {status_class}">{html.escape(verdict.headline())}<br>{html.escape(note)}{chance}</p>'
        + table(rows, classes)
        + f'<p class="note">Numbers {source}. Gap = leader minus this regime on the same seeds; '
        f"p: two-sided paired t-test over seeds, Holm-corrected for the number of regimes.</p>"
        + mcnemar_html(verdict)
    )


# -- the protocol ----------------------------------------------------------------------------
PROTOCOL_FACTS = (
    ("regimes", "regimes compared"),
    ("trials_per_regime", "search trials per regime (each its own Optuna study)"),
    ("epochs_per_trial", "epochs per trial"),
    ("sampler", "sampler"),
    ("search_seed", "search seed (every search trial trains with it)"),
    ("early_stopping", "early stopping"),
    ("rungs", "ASHA rungs (epochs)"),
    ("grace_period", "grace period"),
    ("reduction_factor", "reduction factor"),
    ("time_budget_s", "time budget (s)"),
    ("confirm_seeds", "fresh confirmation seeds"),
    ("confirm_top_k", "configs confirmed per regime"),
    ("verdict_test", "verdict"),
    ("fixed", "settings fixed by the user"),
    ("cpus_per_trial", "CPUs per trial"),
    ("gpus_per_trial", "GPUs per trial"),
    ("max_concurrent", "trials at once"),
    ("versions", "versions"),
)


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={item}" for key, item in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def protocol_html(protocol: dict[str, Any] | None) -> str:
    """The sweep's own settings in a table, and each regime's search ranges side by side."""
    if protocol is None:
        return f"<p>The sweep recorded no {schema.PROTOCOL_FILE}.</p>"
    facts = [{"": label, "value": _plain(protocol[key])} for key, label in PROTOCOL_FACTS if key in protocol]
    ranges = protocol.get("search_ranges") or {}
    names = sorted({name for space in ranges.values() for name in space})
    grid = [{"setting": name, **{regime: space.get(name, "-") for regime, space in ranges.items()}}
            for name in names]
    return (table(facts) + "<p>Search ranges per regime (a dash: the regime does not have the setting):</p>"
            + table(grid))


# -- leaderboard, configs, hand confirmations ------------------------------------------------------
def leaderboard_html(board: pd.DataFrame) -> str:
    shown = display(board)
    classes = [ROW_CLASSES.get(mark, "") for mark in board["verdict"]]
    return table([row.to_dict() for _, row in shown.iterrows()], classes)


def image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


# What the leading config is, per outcome that has one.
LEADING_ROLES = {
    schema.WINNER: "the winner's",
    schema.TIE: "not a winner",
    schema.NO_TRUSTWORTHY_WINNER: "NOT a result: near chance",
}


def configs_html(sweep: Sweep, dataset: str, verdict: DatasetVerdict) -> str:
    """The leading config and every regime's confirmed config, folded."""
    parts = []
    for regime, pick in confirmed_configs(sweep, dataset).items():
        role = (f"the leading config, {LEADING_ROLES.get(verdict.status, 'not a winner')} ({schema.BEST_CONFIG})"
                if regime == verdict.leader else "confirmed config")
        if pick.metadata is None:
            role = "its best search trial (the sweep has not recorded a confirmed config)"
        summary = (f"{regime}: {role}; search run {pick.run_id}, its final validation "
                   f"{_percent(pick.val_acc)}%, test {_percent(pick.test_acc)}%")
        rows = [{"setting": key, "value": str(value)} for key, value in pick.config.items()]
        parts.append(f"<details><summary>{html.escape(summary)}</summary>{table(rows)}</details>")
    return "".join(parts)


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def reconfirmations_html(sweep: Sweep, dataset: str) -> str:
    """Confirmations re-run by hand (`python -m analysis confirm`), if any."""
    parts = []
    for mode in BASELINES:
        found = sweep.artifact_json(dataset, f"{ANALYSIS_FOLDER}/{confirm_file(mode)}")
        if found is None:
            continue
        verdict = found["verdict"]
        arms = "; ".join(f"{arm['label']}: {arm['source']}" for arm in found["arms"])
        rows = [{
            "config": arm["regime"],
            "seeds": ", ".join(map(str, arm["seeds"])),
            "mean test % [95% CI]": _interval(arm["test"]["mean"], arm["test"]["low"], arm["test"]["high"]),
        } for arm in verdict["arms"]]
        parts.append(f"<h4>By hand, baseline {html.escape(mode)}</h4><p>{html.escape(arms)}</p>" + table(rows)
                     + f'<p class="verdict {html.escape(verdict["outcome"])}">{html.escape(verdict["headline"])}</p>')
    return "".join(parts)


def dataset_section(sweep: Sweep, dataset: str, verdict: DatasetVerdict, images: list[Path]) -> str:
    parts = [f"<h2>{html.escape(dataset)}: configs and pictures</h2>", configs_html(sweep, dataset, verdict)]
    again = reconfirmations_html(sweep, dataset)
    if again:
        parts += ["<h3>Confirmation re-run by hand</h3>", again]
    parts += ["<h3>Pictures</h3>", *map(image, [path for path in images if path.suffix == ".png"])]
    interactive = interactive_parallel(sweep, dataset)
    if interactive is not None:
        parts += ["<h3>Parallel coordinates, interactive</h3>",
                  '<p class="note">Drag an axis to reorder it; drag along an axis to keep only the '
                  "trials in that range.</p>",
                  interactive.to_html(full_html=False, include_plotlyjs=False)]
    return "\n".join(parts)


def alarms_html(verdicts: dict[str, DatasetVerdict]) -> str:
    """Above everything else: each dataset whose leader is near chance, with the sweep's reason."""
    return "".join(
        f'<p class="alarm">{html.escape(dataset)}: {html.escape(verdict.headline())}. '
        f"Nothing on this page is a result for {html.escape(dataset)}; its leading config is not a "
        "winner's.</p>"
        for dataset, verdict in verdicts.items() if not verdict.trustworthy)


def render(sweep: Sweep, images: dict[str, list[Path]]) -> str:
    """The whole page as a string."""
    parents = sweep.parents
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    verdicts = {dataset: dataset_verdict(sweep, dataset) for dataset in sweep.datasets}
    summary = table([{
        "dataset": dataset,
        "model": parents.loc[dataset, schema.MODEL],
        "code version": parents.loc[dataset, schema.CODE_VERSION],
        "search trials": len(sweep.trials_of(dataset)),
        "confirmation runs": len(sweep.confirmations_of(dataset)),
        "lost runs (not counted)": len(sweep.lost_of(dataset)),
        "parent run": parents.loc[dataset, "run_id"],
    } for dataset in sweep.datasets])
    protocol = next((found for found in map(sweep.protocol, sweep.datasets) if found is not None), None)
    title = f"Sweep {html.escape(sweep.sweep_id)} ({html.escape(sweep.experiment)})"
    from plotly.offline import get_plotlyjs

    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body><h1>{title}</h1>"
        f"{alarms_html(verdicts)}"
        f"<p>Generated {stamp}. Each regime searched with the same budget; its best config (on "
        f"validation accuracy, never test) was retrained on fresh seeds. A regime wins a dataset only "
        f"when it is significantly better than every other regime there; otherwise the verdict is a "
        f"tie. A leader at or near chance is no result at all (no trustworthy winner).</p>"
        f"<h2>Verdicts</h2>{''.join(verdict_html(sweep, d, verdicts[d]) for d in sweep.datasets)}"
        f"<h2>The protocol</h2>{protocol_html(protocol)}{summary}"
        f"<h2>Leaderboard</h2><p>Search: each regime's own trials (end states done/stopped early/"
        f"diverged/errored; accuracies % over completed trials; the best chosen on validation). "
        f"Confirmation: the regime's best config on fresh seeds. Lost runs (trials the sweep's saved "
        f"state never recorded; another ran in each one's place) are counted nowhere.</p>"
        f"{leaderboard_html(leaderboard(sweep))}"
        + "".join(dataset_section(sweep, d, verdicts[d], images.get(d, [])) for d in sweep.datasets)
        + "</body></html>"
    )


def write_report(sweep: Sweep, out: Path) -> Path:
    """Draw the pictures, write `report-<sweep_id>.html` and attach it to every parent run."""
    images = write_plots(sweep, out)
    path = out / f"report-{sweep.sweep_id}.html"
    path.write_text(render(sweep, images), encoding="utf-8")
    for dataset in sweep.datasets:
        log_files(sweep, dataset, [path])
    return path
