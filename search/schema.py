"""The MLflow record schema of a sweep, defined once.

`search/` writes these records and `analysis/` and `benchmarks/` read them, so
every tag name, role, stage, end state, file name and the rule that ranks
trials lives here and nowhere else. Plain constants and pure functions: this
module imports neither Ray nor MLflow. docs/contracts.md describes the records
in words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from trainables import config_file

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
CODE_VERSION: Final = config_file.CODE_VERSION
REGIMES: Final = "regimes"  # comma-separated, in the order the sweep compared them
VERDICT: Final = "verdict"  # one of VERDICTS
WINNER_REGIME: Final = "winner_regime"  # the significant winner, else NONE
LEADING_REGIME: Final = "leading_regime"  # best mean confirmed test accuracy, winner or not
LEADING_RUN_ID: Final = "leading_run_id"  # the search trial whose config leads
TIED_REGIMES: Final = "tied_regimes"  # comma-separated: the leader and those within noise of it
VERDICT_REASON: Final = "verdict_reason"  # one sentence: why the verdict is what it is
NONE: Final = "none"

WINNER: Final = "winner"  # the leader is significantly better than every other regime
TIE: Final = "tie"  # the leader is not: the tied regimes are within noise of each other
NO_RESULT: Final = "no_result"  # no regime completed a confirmation run
# The leader's mean confirmed test accuracy is at or near chance (below CHANCE_ACC +
# a margin, analysis.verdict.trust_floor): whatever the tests say, nothing here is worth
# exporting as a winner. `leading_regime` still names the leader; readers must not
# present its config as a result.
NO_TRUSTWORTHY_WINNER: Final = "no_trustworthy_winner"
VERDICTS: Final = (WINNER, TIE, NO_RESULT, NO_TRUSTWORTHY_WINNER)

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
LEADER: Final = "leader"  # "true" on the search trial whose config leads its dataset (set with the verdict)
WINNER_RUN: Final = "winner"  # "true" on that trial too when the verdict names it the winner
NODE_ID: Final = "node_id"  # the Ray node the trial trains on (its latest, after a retry elsewhere)
DEVICE: Final = "device"  # what it trains on: "cuda:0", or "cpu" (with a GPU held only if opted in)
RESOURCES: Final = "resources"  # what Ray gave the trial, e.g. "CPU=1, GPU=0.5"

COMPLETED: Final = "completed"  # ran every epoch with a finite loss
STOPPED_EARLY: Final = "stopped_early"  # stopped by ASHA at a rung
DIVERGED: Final = "diverged"  # the loss exploded; never ranked, never a winner
ERRORED: Final = "errored"  # crashed after its retries
# The sweep's saved state never recorded this trial (the driver stopped before Tune saved
# it, or the sweep was restarted from scratch): its run is closed, its metrics are real,
# but it is not part of the search or the verdict and another trial ran in its place.
# Readers count trials without it.
LOST: Final = "lost"
END_STATES: Final = (COMPLETED, STOPPED_EARLY, DIVERGED, ERRORED, LOST)
UNFINISHED: Final = "unfinished"  # what readers call a run without an end state yet

# -- metrics (step = epoch, except rates) --------------------------------------------
VAL_ACC: Final = "val_acc"  # every epoch: what search ranks on and ASHA compares
TEST_ACC: Final = "test_acc"  # only at rungs and the last epoch: reported, never ranked on
TRAIN_LOSS: Final = "train_loss"
LR_PREFIX: Final = "lr/"  # lr/<layer group>, step = optimizer step (the rate training used)
CHANCE_ACC: Final = "chance_acc"  # parent: 1 / number of classes
TRUST_FLOOR_ACC: Final = "trust_floor_acc"  # parent: the least mean test accuracy a winner needs

# -- parent metrics (step 0): the verdict's numbers, per regime after the slash --------
CONFIRM_TEST_ACC: Final = "confirm_test_acc/"  # mean over the fresh seeds, a fraction
CONFIRM_VAL_ACC: Final = "confirm_val_acc/"
GAP_POINTS: Final = "gap_points/"  # the leader's lead over this regime, in points
P_HOLM: Final = "p_holm/"  # the paired t-test against the leader, Holm-corrected
BEST_VAL_ACC: Final = "best_val_acc"  # the leading config's search trial, final epoch
BEST_TEST_ACC: Final = "best_test_acc"
PERCENT: Final = "_pct"  # each accuracy above again in percent, 2 decimals (98.44: MLflow's charts show 0.98)

# -- metadata of an exported or recorded config file (the file format is trainables'):
# RECORDED_*: its search trial's final accuracies, which a replay with the same seed
# reproduces exactly on the CPU.
RECORDED_VAL_ACC: Final = config_file.RECORDED_VAL_ACC
RECORDED_TEST_ACC: Final = config_file.RECORDED_TEST_ACC

# -- artifacts on a parent run -------------------------------------------------------
BEST_CONFIG: Final = "best_config.yaml"  # the leading config, replayable, verdict in its metadata
VERDICT_FILE: Final = "verdict.json"  # per regime and seed: accuracies, intervals, tests
PROTOCOL_FILE: Final = "protocol.json"  # the sweep's own settings and search ranges
REGIME_CONFIGS: Final = "configs"  # configs/<regime>.yaml: each regime's confirmed config
SWEEP_FILE: Final = "sweep.yaml"  # the sweep's options, replayable with `lerac-sweep --config`

# -- experiment tags --------------------------------------------------------------------
# MLflow's UI reads a saved runs-table view (filter, sort, columns) from the experiment tag
# `mlflow.sharedViewState.<key>` when a link carries `?viewStateShareKey=<key>`.
SHARED_VIEW_PREFIX: Final = "mlflow.sharedViewState."


def percent_key(key: str) -> str:
    """The percent twin of a parent accuracy metric: `best_val_acc` -> `best_val_acc_pct`,
    `confirm_test_acc/lerac` -> `confirm_test_acc_pct/lerac`."""
    name, slash, regime = key.partition("/")
    return f"{name}{PERCENT}{slash}{regime}"


def rank_key(val_acc: float, train_loss: float) -> tuple[float, float]:
    """The ranking of finished trials within a regime: higher is better.

    Highest final validation accuracy (never test accuracy), ties to the lower
    final training loss; a non-finite result ranks below everything.
    """
    if not (math.isfinite(val_acc) and math.isfinite(train_loss)):
        return (-math.inf, -math.inf)
    return (val_acc, -train_loss)


def top_k_choice(mean_val_by_rank: Mapping[int, float]) -> int:
    """Which of a regime's confirmed top-k configs counts for the verdict: the best mean
    validation accuracy over the fresh seeds (never test accuracy), ties to the better rank."""
    return max(mean_val_by_rank, key=lambda rank: (mean_val_by_rank[rank], -rank))


def child_filter(parent_run_id: str, **tags: str) -> str:
    """An MLflow filter string for a parent's child runs carrying `tags`."""
    conditions = [f"tags.`{PARENT_RUN_ID}` = '{parent_run_id}'"]
    conditions += [f"tags.{key} = '{value}'" for key, value in tags.items()]
    return " and ".join(conditions)
