"""The YAML file that describes a run, and that replays one.

A file is either a flat mapping of settings, or a mapping with a `config` key
(the flat settings) beside metadata such as where the config came from and the
accuracy it was recorded with. The sweep writes `best_config.yaml` in the
second form; `python -m trainables.train --config FILE` reads both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ConfigFile:
    settings: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


def read_config_file(path: str | Path) -> ConfigFile:
    """Read a run's settings (and any metadata) from a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    content = yaml.safe_load(path.read_text())
    if not isinstance(content, Mapping):
        raise ValueError(f"config file {path} must hold a mapping of settings")
    if "config" in content:
        settings = content["config"]
        if not isinstance(settings, Mapping):
            raise ValueError(f"the 'config' key of {path} must hold a mapping of settings")
        metadata = {k: v for k, v in content.items() if k != "config"}
        return ConfigFile(settings=dict(settings), metadata=metadata)
    return ConfigFile(settings=dict(content))


def write_config_file(path: str | Path, settings: Mapping[str, Any], metadata: Mapping[str, Any]) -> Path:
    """Write settings plus metadata in the replayable form; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**metadata, "config": dict(settings)}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
