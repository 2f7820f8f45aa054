"""A sweep file: every option of a sweep in YAML, as W&B and Ray users keep their sweeps.

`lerac-sweep --config sweep.yaml` reads it (`yaml.safe_load`: nothing in it
can create Python objects); its keys are `SweepOptions`' fields, and flags
given on the command line override them (`--set` pairs are added to the
file's `fixed` settings, a pair for the same key winning). `fixed` takes
`KEY: VALUE` and `REGIME.KEY: VALUE`, or a regime's settings nested under its
name. Relative paths mean what they mean as flags: relative to the folder the
sweep is started from. Each parent run keeps the sweep's options as
`sweep.yaml`, so any sweep can be re-run from its record.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from search import schema
from search.options import SweepOptions, first_error
from trainables.config_file import read_yaml
from trainables.regime_settings import REGIME_NAMES

WHAT = "sweep file"


class SweepFileError(ValueError):
    """A sweep file that cannot be used; the message is one line naming the file and key."""


def _flat_fixed(fixed: Any, path: Path) -> dict[str, Any]:
    """`fixed` with a regime's nested settings spelled `REGIME.KEY`."""
    if fixed is None:
        return {}
    if not isinstance(fixed, Mapping):
        raise SweepFileError(f"{WHAT} {path}: 'fixed' must map settings to values")
    flat = {}
    for key, value in fixed.items():
        if key in REGIME_NAMES and isinstance(value, Mapping):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[str(key)] = value
    return flat


def read_sweep_file(path: str | Path) -> dict[str, Any]:
    """The options a sweep file sets (keys checked against `SweepOptions`, values not yet)."""
    path = Path(path)
    try:
        content = read_yaml(path, what=WHAT)
    except (ValueError, FileNotFoundError) as error:
        raise SweepFileError(str(error)) from None
    if content is None:
        return {}
    if not isinstance(content, Mapping):
        raise SweepFileError(f"{WHAT} {path} must hold a mapping of options, e.g. 'num_trials: 20'")
    known = SweepOptions.model_fields
    for key in content:
        if key not in known:
            raise SweepFileError(f"{WHAT} {path}: unknown option {key!r}; known options: {', '.join(known)}")
    values = dict(content)
    if "fixed" in values:
        values["fixed"] = _flat_fixed(values["fixed"], path)
    return values


def options_with_file(path: str | Path, flags: Mapping[str, Any]) -> SweepOptions:
    """The file's options with `flags` (the options given on the command line) on top."""
    from_file = read_sweep_file(path)
    merged = {**from_file, **flags}
    if "fixed" in from_file and "fixed" in flags:
        merged["fixed"] = {**from_file["fixed"], **flags["fixed"]}
    try:
        return SweepOptions(**merged)
    except ValidationError as error:
        field = str((error.errors()[0].get("loc") or ("",))[0])
        if field in from_file and field not in flags:
            raise SweepFileError(f"{WHAT} {path}: {first_error(error)}") from None
        raise


def sweep_yaml(options: SweepOptions) -> str:
    """The options as a sweep file that `lerac-sweep --config` reads back to the same options."""
    header = ("# lerac-search sweep file: every option of this sweep (search.options.SweepOptions).\n"
              "# Re-run it with: lerac-sweep --config sweep.yaml  (flags given there override it)\n")
    return header + yaml.safe_dump(options.model_dump(mode="json"), sort_keys=False)


def attach_sweep_file(client: Any, run_id: str, options: SweepOptions) -> None:
    """Keep the sweep's options on a parent run as `sweep.yaml`."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / schema.SWEEP_FILE
        path.write_text(sweep_yaml(options), encoding="utf-8")
        client.log_artifact(run_id, str(path))
