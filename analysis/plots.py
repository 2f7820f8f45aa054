"""The sweep's pictures as PNG files: rate curves, learning curves (search and confirmation),
importances per regime, parallel coordinates; and the parallel coordinates once more as an
interactive HTML page (plotly), where axes can be reordered and ranges brushed.

Figures are built as `matplotlib.figure.Figure` objects (no pyplot, no global
state, the Agg canvas), so they render the same headless, in tests and in CI.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from analysis.importance import FEW_TRIALS, build_study, param_importances
from analysis.records import Sweep, histories, log_files, trial_config
from analysis.winners import confirmed_configs, dataset_verdict
from search import schema
from trainables.config import RunConfig
from trainables.regimes import REGIME_NAMES, REGIMES, Lerac
from trainables.training import layer_rate_curves

REGIME_COLOURS = dict(zip(REGIME_NAMES, matplotlib.colormaps["tab10"].colors, strict=False))
MISSING = -0.15  # where a trial without a (conditional) setting sits on its parallel axis
DPI = 150

_SYMBOLS = {"curriculum_epochs": "k", "decay_base": "b", "eta_min": "η_min", "shape": "shape"}


def setting_label(key: str) -> str:
    """A setting's name, with its regime when only that regime has it (a conditional setting)."""
    owners = [name for name, regime in REGIMES.items() if key in regime.Settings.__dataclass_fields__]
    return f"{key} ({owners[0]})" if owners else key


def _regime_colour(regime: str) -> Any:
    return REGIME_COLOURS.get(regime, "0.4")


def _settings_line(config: dict[str, Any]) -> str:
    """The settings that shape the rate curves, for a title."""
    stepped = config.get("rule") == "stepped"
    keys = [key for key in _SYMBOLS if key in config and not (stepped and key == "shape")]
    own = [f"{_SYMBOLS[key]} = {config[key]:.3g}" if isinstance(config[key], float)
           else f"{_SYMBOLS[key]} = {config[key]}" for key in keys]
    if "curriculum_epochs" in config:
        own[0] += " epochs"
    if stepped:
        own.append(f"stepped x{1 / config['decay_base']:.3g} per update")
    if config.get("updates_per_epoch"):
        own.append(f"{config['updates_per_epoch']} rate updates per epoch")
    if config.get("head_scale") is not None:
        own.append(f"head at η0 x {config['head_scale']:.3g}")
    shared = [f"η0 = {config['lr']:.3g}", f"{config['optimizer']}", f"{config['schedule']} schedule"]
    if config.get("warmup_epochs"):
        shared.insert(1, f"linear warm-up {config['warmup_epochs']:.3g} epochs")
    return ", ".join(own + shared)


def rate_curves_figure(config: dict[str, Any], epochs: int | None = None) -> Figure:
    """Every layer group's learning rate over the first `epochs` epochs (log scale).

    One line per group, coloured from the input (dark) to the output (light);
    the curriculum (LeRaC's first k epochs) or the warm-up is shaded.
    """
    config = RunConfig.from_dict(config).to_dict()
    epochs = epochs or int(config["epochs"])
    steps, curves = layer_rate_curves(config, epochs)
    per_epoch = len(steps) / epochs
    x = np.asarray(steps) / per_epoch
    figure = Figure(figsize=(8.5, 4.8), layout="constrained", dpi=DPI)
    ax = figure.add_subplot()
    colours = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.92, len(curves)))
    for (name, rates), colour in zip(curves.items(), colours, strict=True):
        ax.plot(x, rates, color=colour, linewidth=1.8, label=name)
    _label_shared_starts(ax, curves)
    rise = (("curriculum: k", config["curriculum_epochs"]) if "curriculum_epochs" in config
            else ("warm-up", config["warmup_epochs"]))
    if rise[1]:
        end = min(rise[1], epochs)
        ax.axvspan(0, end, color="0.93", zorder=0)
        ax.text(end / 2, 0.02, f"{rise[0]} = {rise[1]:.3g} epochs", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=9, color="0.3")
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlim(0, epochs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="layer group\n(input → output)", loc="center left", bbox_to_anchor=(1.01, 0.5),
              fontsize=8, title_fontsize=8, frameon=False)
    settings = textwrap.fill(_settings_line(config), width=100)
    ax.set_title(f"{config['regime']}: per-layer learning rates, {config['model']} "
                 f"({config['granularity']} groups) on {config['dataset']}\n{settings}", fontsize=10)
    return figure


def _label_shared_starts(ax: Any, curves: dict[str, list[float]]) -> None:
    """Name the groups whose lines coincide from the start (e.g. every layer at the floor)."""
    starts: dict[float, list[str]] = {}
    for name, rates in curves.items():
        starts.setdefault(float(f"{rates[0]:.6g}"), []).append(name)  # equal up to rounding
    for rate, names in starts.items():
        if len(names) > 1 and rate > 0:
            ax.annotate(f"{names[0]} … {names[-1]}", (0, rate), xytext=(6, 4), textcoords="offset points",
                        fontsize=8, color="0.25")


def learning_curves_figure(history: pd.DataFrame, trials: pd.DataFrame, leading_id: str | None, *,
                           lost: int = 0) -> Figure:
    """Validation accuracy per epoch of every search trial, coloured by regime; the leading
    config's trial bold. Confirmation runs are drawn apart (`confirmation_curves_figure`);
    `lost` runs are not drawn, only counted in the title."""
    figure = Figure(figsize=(8, 4.8), layout="constrained", dpi=DPI)
    ax = figure.add_subplot()
    for _, trial in trials.iterrows():
        points = history[history["run_id"] == trial["run_id"]]
        if points.empty:
            continue
        leading = trial["run_id"] == leading_id
        ax.plot(points["step"], 100 * points["value"], color=_regime_colour(trial[schema.REGIME]), gid=trial["run_id"],
                linewidth=2.8 if leading else 1.0, alpha=1.0 if leading else 0.6,
                marker="o" if leading else None, markersize=4, zorder=3 if leading else 2)
        if trial[schema.END_STATE] in (schema.STOPPED_EARLY, schema.DIVERGED):
            ax.plot(points["step"].iloc[-1], 100 * points["value"].iloc[-1], "x", color="0.2", markersize=6)
    regimes = sorted(trials[schema.REGIME].dropna().unique())
    handles = [Line2D([], [], color=_regime_colour(r), label=r) for r in regimes]
    handles += [Line2D([], [], color="0.2", linewidth=2.8, marker="o", label="leading config"),
                Line2D([], [], color="0.2", marker="x", linestyle="", label="stopped/diverged")]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    dataset = trials[schema.DATASET].iloc[0] if len(trials) else ""
    left_out = f" ({lost} lost run{'s' if lost != 1 else ''} left out)" if lost else ""
    ax.set_title(f"{dataset}: learning curves of {len(trials)} search trials{left_out}", fontsize=10)
    return figure


SEED_STYLES = ("-", "--", "-.", ":")


def confirmation_curves_figure(history: pd.DataFrame, runs: pd.DataFrame) -> Figure:
    """Each confirmation run: validation accuracy per epoch (one line per seed and regime) and
    its final test accuracy (a marker at the last epoch), so the seed spread is visible."""
    figure = Figure(figsize=(8, 4.8), layout="constrained", dpi=DPI)
    ax = figure.add_subplot()
    for regime, mine in runs.groupby(schema.REGIME, sort=True):
        for position, (_, run) in enumerate(mine.sort_values([schema.SEED, schema.RANK]).iterrows()):
            points = history[history["run_id"] == run["run_id"]]
            if points.empty:
                continue
            colour = _regime_colour(regime)
            rank = f", config {int(run[schema.RANK])}" if mine[schema.RANK].nunique() > 1 else ""
            ax.plot(points["step"], 100 * points["value"], color=colour, linewidth=1.4, gid=run["run_id"],
                    linestyle=SEED_STYLES[position % len(SEED_STYLES)],
                    label=f"{regime} seed {int(run[schema.SEED])}{rank}")
            if math.isfinite(run[schema.TEST_ACC]):
                ax.plot(points["step"].iloc[-1], 100 * run[schema.TEST_ACC], "*", color=colour, markersize=9)
    ax.plot([], [], "*", color="0.3", label="final test accuracy")
    ax.legend(loc="lower right", fontsize=7, ncols=2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy per epoch (%)")
    ax.grid(True, alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    dataset = runs[schema.DATASET].iloc[0] if len(runs) else ""
    seeds = runs[schema.SEED].nunique() if len(runs) else 0
    ax.set_title(f"{dataset}: confirmation runs, each regime's best config on {seeds} fresh seeds",
                 fontsize=10)
    return figure


def _few_trials_note(completed: int) -> str:
    return (f"only {completed} completed: a rough estimate (PED-ANOVA wants {FEW_TRIALS}+)"
            if completed < FEW_TRIALS else "")


def importance_figure(importances: dict[str, tuple[dict[str, float], int]], dataset: str) -> Figure:
    """Per regime, horizontal bars of Optuna's parameter importances (PED-ANOVA) over that
    regime's own search; `importances` maps regime -> (importances, completed trials). Each panel
    names its trial count, with a caveat when there are too few for a stable estimate."""
    panels = max(1, len(importances))
    rows = max([len(found) for found, _ in importances.values()] + [3])
    width = max(7.0, 5.5 * panels)
    figure = Figure(figsize=(width, 0.45 * rows + 2.0), layout="constrained", dpi=DPI)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for ax, (regime, (found, completed)) in zip(axes, importances.items(), strict=False):
        if found:
            names = list(found)[::-1]
            bars = ax.barh(names, [found[n] for n in names], color=_regime_colour(regime))
            ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
            ax.set_xlabel("importance (normalised, sums to 1)")
            ax.set_xlim(0, 1)
        else:
            ax.text(0.5, 0.5, "fewer than 2 completed trials,\nor nothing was searched",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        title = f"{regime}: {completed} completed search trial{'s' if completed != 1 else ''}"
        note = _few_trials_note(completed) if found else ""
        ax.set_title(title + (f"\n{note}" if note else ""), fontsize=9, color="0.1")
    heading = f"{dataset}: which searched settings mattered, per regime (Optuna PED-ANOVA importance)"
    figure.suptitle(textwrap.fill(heading, width=int(width * 13)), fontsize=10)
    return figure


def _axis_positions(values: list[Any], distribution: BaseDistribution) -> np.ndarray:
    """Values mapped to [0, 1] along their axis (log-scaled where searched so); missing ones low."""
    if isinstance(distribution, CategoricalDistribution):
        last = max(len(distribution.choices) - 1, 1)
        return np.array([MISSING if v is None else distribution.choices.index(v) / last for v in values])
    low, high = distribution.low, distribution.high
    scale = np.log if distribution.log else (lambda v: v)
    span = (scale(high) - scale(low)) or 1.0
    return np.array([MISSING if v is None else (scale(v) - scale(low)) / span for v in values])


def axis_ticks(distribution: BaseDistribution, count: int = 5) -> list[tuple[float, str]]:
    """Tick positions in [0, 1] with labels: every choice of a categorical setting, else
    `count` values spread evenly (geometrically on a log axis), ends included."""
    if isinstance(distribution, CategoricalDistribution):
        last = max(len(distribution.choices) - 1, 1)
        return [(i / last, str(choice)) for i, choice in enumerate(distribution.choices)]
    low, high = float(distribution.low), float(distribution.high)
    if high == low:
        return [(0.0, f"{low:.3g}")]
    values = np.geomspace(low, high, count) if distribution.log else np.linspace(low, high, count)
    positions = _axis_positions(list(values), distribution)
    return [(float(y), f"{v:.3g}") for y, v in zip(positions, values, strict=True)]


def parallel_order(trials: pd.DataFrame, space: dict[str, BaseDistribution]) -> list[str]:
    """The searched settings, most important first (importance over all the dataset's search
    trials, the regime one of the settings); settings without an importance last, by name."""
    study, _ = build_study(trials)
    found = param_importances(study)
    return sorted(space, key=lambda key: (-found.get(key, -1.0), key))


def parallel_figure(trials: pd.DataFrame, space: dict[str, BaseDistribution], leading_id: str | None,
                    order: list[str] | None = None) -> Figure:
    """Parallel coordinates: one polyline per search trial through its searched settings (most
    important first) to val_acc, coloured by validation accuracy; regime-only settings sit on
    the n/a band for the other regimes; trials that did not complete are dotted."""
    scored = trials[trials[schema.VAL_ACC].map(math.isfinite)]
    configs = [trial_config(row) for _, row in scored.iterrows()]
    keys = [key for key in (order or sorted(space)) if key in space]
    accuracies = scored[schema.VAL_ACC].to_numpy()
    target = FloatDistribution(float(accuracies.min()), float(accuracies.max())) if len(accuracies) else None
    figure = Figure(figsize=(max(7.0, 1.35 * (len(keys) + 1) + 1.5), 5.0), layout="constrained", dpi=DPI)
    ax = figure.add_subplot()
    if target is None:
        ax.text(0.5, 0.5, "no trial has a validation accuracy", ha="center", transform=ax.transAxes)
        return figure
    columns = [_axis_positions([c.get(key) for c in configs], space[key]) for key in keys]
    columns.append(_axis_positions(list(accuracies), target))
    table = np.column_stack(columns)
    colours = matplotlib.colormaps["viridis"]
    norm = Normalize(vmin=100 * target.low, vmax=100 * target.high if target.high > target.low else 100 * target.low + 1)
    order_by_accuracy = np.argsort(accuracies)  # best drawn last, on top
    rows = list(scored.iterrows())
    for index in order_by_accuracy:
        _, trial = rows[index]
        leading = trial["run_id"] == leading_id
        ax.plot(range(table.shape[1]), table[index], color=colours(norm(100 * accuracies[index])),
                alpha=1.0 if leading else 0.8, linewidth=3.2 if leading else 1.3, zorder=4 if leading else 2,
                linestyle="-" if trial[schema.END_STATE] == schema.COMPLETED else ":")
        if leading:
            ax.plot(range(table.shape[1]), table[index], color="0.1", linewidth=5.0, alpha=0.35, zorder=3)
    for i, distribution in enumerate([*[space[k] for k in keys], target]):
        ax.axvline(i, color="0.3", linewidth=0.8)
        ticks = axis_ticks(distribution) if i < len(keys) else [
            (y, f"{100 * float(label):.1f}%") for y, label in axis_ticks(distribution)]
        for y, label in ticks:
            ax.plot([i - 0.04, i], [y, y], color="0.3", linewidth=0.8)
            ax.text(i + 0.04, y, label, fontsize=7, va="center", color="0.15",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5})
    ax.axhspan(MISSING - 0.05, MISSING + 0.05, color="0.93", zorder=0)
    ax.text(-0.45, MISSING, "n/a", fontsize=7, va="center", color="0.4")
    ax.set_xticks(range(len(keys) + 1), [*map(setting_label, keys), "val_acc"], rotation=30, ha="right",
                  fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(keys) + 0.6)
    ax.set_ylim(MISSING - 0.08, 1.08)
    bar = figure.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=colours), ax=ax, pad=0.01)
    bar.set_label("final validation accuracy (%)", fontsize=8)
    ax.legend(handles=[Line2D([], [], color="0.2", linewidth=3.2, label="leading config"),
                       Line2D([], [], color="0.3", linestyle=":", label="stopped early / diverged")],
              loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, fontsize=8, frameon=False)
    dataset = scored[schema.DATASET].iloc[0]
    ax.set_title(f"{dataset}: searched settings of {len(scored)} search trials, most important first",
                 fontsize=10, pad=22)
    return figure


def parallel_html(trials: pd.DataFrame, space: dict[str, BaseDistribution], order: list[str]) -> Any:
    """The parallel coordinates as an interactive plotly figure: drag an axis to reorder it,
    brush a range to filter the trials. Missing (conditional) settings sit below their axis."""
    import plotly.graph_objects as go

    scored = trials[trials[schema.VAL_ACC].map(math.isfinite)]
    configs = [trial_config(row) for _, row in scored.iterrows()]
    accuracies = 100 * scored[schema.VAL_ACC].to_numpy()
    dimensions = []
    for key in [key for key in order if key in space]:
        positions = _axis_positions([c.get(key) for c in configs], space[key])
        ticks = axis_ticks(space[key])
        if (positions == MISSING).any():
            ticks = [(MISSING, "n/a"), *ticks]
        dimensions.append({"label": setting_label(key), "values": positions, "range": [MISSING - 0.05, 1.0],
                           "tickvals": [y for y, _ in ticks], "ticktext": [label for _, label in ticks]})
    dimensions.append({"label": "val_acc (%)", "values": accuracies})
    figure = go.Figure(go.Parcoords(
        line={"color": accuracies, "colorscale": "Viridis", "showscale": True,
              "colorbar": {"title": {"text": "val acc (%)"}}},
        dimensions=dimensions,
    ))
    dataset = scored[schema.DATASET].iloc[0] if len(scored) else ""
    figure.update_layout(title=f"{dataset}: {len(scored)} search trials, settings most important first "
                               "(drag axes to reorder, brush to filter)",
                         margin={"l": 80, "r": 80, "t": 90, "b": 40}, height=520)
    return figure


def save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def dataset_plots(sweep: Sweep, dataset: str, out: Path) -> list[Path]:
    """All pictures of one dataset, written to `out` as `<dataset>-<kind>.png`.

    Learning curves, importances and parallel coordinates read search trials
    only (never `lost` runs); the confirmation runs get their own learning-curve picture.
    """
    trials = sweep.trials_of(dataset)
    verdict = dataset_verdict(sweep, dataset)
    written = []
    configs = confirmed_configs(sweep, dataset)
    leading = configs.get(verdict.leader) if verdict.leader else None
    if leading is not None:
        written.append(save(rate_curves_figure(leading.config), out / f"{dataset}-rates-leading.png"))
    lerac = configs.get(Lerac.name)
    if lerac is not None and lerac is not leading:
        written.append(save(rate_curves_figure(lerac.config), out / f"{dataset}-rates-{Lerac.name}.png"))
    leading_id = verdict.leading_run_id or (leading.run_id if leading else None)
    history = histories(sweep.client, trials["run_id"], schema.VAL_ACC)
    lost = len(sweep.lost_of(dataset, schema.SEARCH))
    written.append(save(learning_curves_figure(history, trials, leading_id, lost=lost),
                        out / f"{dataset}-learning-curves.png"))
    confirmations = sweep.confirmations_of(dataset)
    if len(confirmations):
        history = histories(sweep.client, confirmations["run_id"], schema.VAL_ACC)
        written.append(save(confirmation_curves_figure(history, confirmations),
                            out / f"{dataset}-confirmation-curves.png"))
    importances = {}
    for regime, mine in trials.groupby(schema.REGIME, sort=False):
        study, _ = build_study(mine)
        importances[regime] = (param_importances(study), len([t for t in study.trials if t.value is not None]))
    written.append(save(importance_figure(importances, dataset), out / f"{dataset}-importance.png"))
    _, space = build_study(trials)
    order = parallel_order(trials, space)
    written.append(save(parallel_figure(trials, space, leading_id, order), out / f"{dataset}-parallel.png"))
    interactive = interactive_parallel(sweep, dataset)
    if interactive is not None:
        path = out / f"{dataset}-parallel.html"
        interactive.write_html(path, include_plotlyjs=True, full_html=True)  # opens offline, alone
        written.append(path)
    return written


def interactive_parallel(sweep: Sweep, dataset: str) -> Any:
    """The dataset's interactive parallel coordinates (a plotly figure), None without trials."""
    trials = sweep.trials_of(dataset)
    if not len(trials):
        return None
    _, space = build_study(trials)
    return parallel_html(trials, space, parallel_order(trials, space))


def write_plots(sweep: Sweep, out: Path) -> dict[str, list[Path]]:
    """Every dataset's pictures (PNG, and the interactive parallel coordinates as HTML), written
    to `out` and attached to its parent run."""
    written = {dataset: dataset_plots(sweep, dataset, out) for dataset in sweep.datasets}
    for dataset, paths in written.items():
        log_files(sweep, dataset, paths)
    return written
