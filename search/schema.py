"""The MLflow record schema of a sweep, defined once.

`search/` writes these records and `analysis/` and `benchmarks/` read them, so
every tag name, role, stage, end state, file name and the rule that ranks
trials lives here and nowhere else. Plain constants and pure functions: this
module imports neither Ray nor MLflow. docs/contracts.md describes the records
in words.
"""

from __future__ import annotations

import math
from typing import Final

# -- tags on every run --------------------------------------------------------------
ROLE: Final = "role"
DATASET: Final = "dataset"
REGIME: Final = "regime"
SWEEP_ID: Final = "sweep_id"
PARENT_RUN_ID: Final = "mlflow.parentRunId"
RUN_NOTE: Final = "mlflow.note.content"  # MLflow shows it as the run's description

# -- roles -------------------------------------------------------------------------
PARENT: Final = "parent"  # one per dataset and sweep
TRIAL: Final = "trial"  # one per Ray Tune trial, a child of its dataset's parent

# -- parent tags -------------------------------------------------------------------
MODEL: Final = "model"
CODE_VERSION: Final = "code_version"
REGIMES: Final = "regimes"  # comma-separated, in the order the sweep compared them
VERDICT: Final = "verdict"  # one of VERDICTS
WINNER_REGIME: Final = "winner_regime"  # the significant winner, else NONE
LEADING_REGIME: Final = "leading_regime"  # best mean confirmed test accuracy, winner or not
LEADING_RUN_ID: Final = "leading_run_id"  # the search trial whose config leads
TIED_REGIMES: Final = "tied_regimes"  # comma-separated: the leader and those within noise of it
NONE: Final = "none"

WINNER: Final = "winner"  # the leader is significantly better than every other regime
TIE: Final = "tie"  # the leader is not: the tied regimes are within noise of each other
NO_RESULT: Final = "no_result"  # no regime completed a confirmation run
VERDICTS: Final = (WINNER, TIE, NO_RESULT)

# -- trial tags --------------------------------------------------------------------
TRIAL_ID: Final = "trial_id"
STAGE: Final = "stage"
SEARCH: Final = "search"  # a trial of a regime's search, ranked on validation accuracy
CONFIRM: Final = "confirm"  # a fresh-seed retraining of a regime's best search config
STAGES: Final = (SEARCH, CONFIRM)
SEED: Final = "seed"  # confirmation runs: the fresh seed
RANK: Final = "rank"  # confirmation runs: 1 = the regime's best search config, 2 = next, ...
SOURCE_RUN_ID: Final = "source_run_id"  # confirmation runs: the search trial it retrains
END_STATE: Final = "end_state"
NODE_ID: Final = "node_id"  # the Ray node the trial trains on (its latest, after a retry elsewhere)
DEVICE: Final = "device"  # what it trains on: "cuda:0", or "cpu" (with a GPU held only if opted in)
RESOURCES: Final = "resources"  # what Ray gave the trial, e.g. "CPU=1, GPU=0.5"

COMPLETED: Final = "completed"  # ran every epoch with a finite loss
STOPPED_EARLY: Final = "stopped_early"  # stopped by ASHA at a rung
DIVERGED: Final = "diverged"  # the loss exploded; never ranked, never a winner
ERRORED: Final = "errored"  # crashed after its retries
END_STATES: Final = (COMPLETED, STOPPED_EARLY, DIVERGED, ERRORED)
UNFINISHED: Final = "unfinished"  # what readers call a run without an end state yet

# -- metrics (step = epoch, except rates) --------------------------------------------
VAL_ACC: Final = "val_acc"  # every epoch: what search ranks on and ASHA compares
TEST_ACC: Final = "test_acc"  # only at rungs and the last epoch: reported, never ranked on
TRAIN_LOSS: Final = "train_loss"
LR_PREFIX: Final = "lr/"  # lr/<layer group>, step = optimizer step (the rate training used)

# -- artifacts on a parent run -------------------------------------------------------
BEST_CONFIG: Final = "best_config.yaml"  # the leading config, replayable, verdict in its metadata
VERDICT_FILE: Final = "verdict.json"  # per regime and seed: accuracies, intervals, tests
PROTOCOL_FILE: Final = "protocol.json"  # the sweep's own settings and search ranges
REGIME_CONFIGS: Final = "configs"  # configs/<regime>.yaml: each regime's confirmed config


def rank_key(val_acc: float, train_loss: float) -> tuple[float, float]:
    """The ranking of finished trials within a regime: higher is better.

    Highest final validation accuracy (never test accuracy), ties to the lower
    final training loss; a non-finite result ranks below everything.
    """
    if not (math.isfinite(val_acc) and math.isfinite(train_loss)):
        return (-math.inf, -math.inf)
    return (val_acc, -train_loss)


def child_filter(parent_run_id: str, **tags: str) -> str:
    """An MLflow filter string for a parent's child runs carrying `tags`."""
    conditions = [f"tags.`{PARENT_RUN_ID}` = '{parent_run_id}'"]
    conditions += [f"tags.{key} = '{value}'" for key, value in tags.items()]
    return " and ".join(conditions)
