"""Everything that can be checked before a sweep starts, so bad input fails fast.

Each check raises `SweepError` with one line that names the bad value; nothing
is written before they all pass.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence

import optuna

from search.cluster_shape import NodeShape, cluster_shapes
from search.options import SweepOptions
from search.spaces import SearchSpace
from search.store_uri import sqlite_path
from trainables.config import RunConfig
from trainables.dataset_catalog import check_dataset_available


class SweepError(Exception):
    """Bad input or state that stops a sweep before any trial runs."""


def validate_options(options: SweepOptions) -> None:
    """Reject what the options alone cannot know is wrong: data missing on disk, a fixed
    setting that clashes with the searched ones, an unreachable tracking store."""
    for dataset in options.datasets:
        try:
            check_dataset_available(dataset, data_dir=options.data_dir,
                                    download=bool(options.fixed.get("download", False)))
        except (ValueError, FileNotFoundError) as error:
            raise SweepError(str(error)) from None
        for regime in options.regimes:
            try:
                RunConfig.from_dict(sample_config(options, dataset, regime))
            except ValueError as error:
                raise SweepError(f"bad fixed setting for {regime}: {error}") from None
    check_tracking_uri(options.tracking_uri)


def sample_config(options: SweepOptions, dataset: str, regime: str) -> dict:
    """One config the search could hand out: the fixed settings with the rest drawn."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    budget = options.budget()
    return SearchSpace(regime=regime, budget=budget, fixed=options.trial_settings(dataset, regime))(study.ask())


def check_tracking_uri(uri: str) -> None:
    """An MLflow store that cannot be reached fails now, not after an hour of trials."""
    database = sqlite_path(uri)
    if database is not None:
        folder = database.resolve().parent
        if not folder.is_dir():
            raise SweepError(f"MLflow tracking URI {uri}: folder {folder} does not exist")
        try:  # MLflow retries a store it cannot open for about two minutes: ask the folder now
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise SweepError(f"MLflow tracking URI {uri}: cannot write in {folder} "
                             f"({error.strerror or error})") from None
        return
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as error:
            raise SweepError(f"MLflow tracking server {uri} cannot be reached: {error}") from None
        return
    raise SweepError(f"unsupported MLflow tracking URI {uri!r}: use sqlite:///FILE or http(s)://HOST:PORT")


def trial_request(options: SweepOptions) -> dict[str, float]:
    """What one trial asks of a node (Tune places each trial on a single node)."""
    return {"CPU": options.cpus_per_trial} | ({"GPU": options.gpus_per_trial} if options.gpus_per_trial else {})


def check_cluster_resources(options: SweepOptions) -> None:
    """Trials that no node can ever host would wait forever: refuse them.

    Checked against every node that is up and, on a cluster joined with
    `--address`, every node type its autoscaler may start (`search.cluster_shape`).
    """
    shapes, autoscaled = cluster_shapes(autoscaling=options.address not in (None, "local"))
    problem = placement_problem(trial_request(options), shapes, autoscaled=autoscaled,
                                wait_for_gpus=options.wait_for_gpus)
    if problem is not None:
        raise SweepError(problem)


def placement_problem(request: Mapping[str, float], shapes: Sequence[NodeShape], *, autoscaled: bool,
                      wait_for_gpus: bool) -> str | None:
    """Why trials asking for `request` would never run on these shapes, or None if they can.

    A cluster whose GPU workers scale from zero hosts GPU trials once the
    autoscaler starts one (with --wait-for-gpus), but never a trial larger
    than its largest node type; without a known autoscaler, only the nodes
    that are up count (and --wait-for-gpus trusts GPU nodes to join by hand).
    """
    asks = " and ".join(f"{amount:g} {key}" for key, amount in request.items())
    if any(shape.running and shape.hosts(request) for shape in shapes):
        return None
    startable = [shape for shape in shapes if not shape.running and shape.hosts(request)]
    if startable:
        if "GPU" in request and not wait_for_gpus:
            return (f"each trial asks for {asks}: no node that is up can host one and the autoscaler "
                    f"would start {startable[0].name} nodes for them; pass --wait-for-gpus to let "
                    "trials wait for GPU workers")
        return None
    every = "; ".join(shape.describe() for shape in shapes)
    if autoscaled:
        return f"each trial asks for {asks} but no node of this cluster can ever host one: it has or may start {every}"
    gpus = max((shape.resources.get("GPU", 0) for shape in shapes), default=0)
    if "GPU" in request and gpus < request["GPU"]:
        if wait_for_gpus:
            return None
        return (f"each trial asks for {request['GPU']:g} GPUs but the Ray cluster has {gpus:g} per node; "
                "use --gpus-per-trial 0, or --wait-for-gpus on an autoscaling cluster whose GPU workers "
                "start on demand")
    return f"each trial asks for {asks} but no node of the Ray cluster can host one: {every}"
