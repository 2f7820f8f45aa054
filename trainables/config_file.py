"""The YAML file that describes a run, and that replays one.

A file is either a flat mapping of settings, or a mapping with a `config` key
(the flat settings) beside metadata such as where the config came from and the
accuracy it was recorded with. The sweep writes `best_config.yaml` in the
second form; `python -m trainables.train --config FILE` reads both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Metadata a replay checks: the accuracies its source run ended with, and the code it ran.
RECORDED_VAL_ACC = "recorded_val_acc"
RECORDED_TEST_ACC = "recorded_test_acc"
CODE_VERSION = "code_version"
MAX_BYTES = 1 << 20  # a run's settings take under a kilobyte: a larger file is the wrong file
_UNKNOWN_TAG = re.compile(r"could not determine a constructor for the tag '([^']*)'")


@dataclass(frozen=True)
class ConfigFile:
    settings: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


def read_config_file(path: str | Path) -> ConfigFile:
    """Read a run's settings (and any metadata) from a YAML file.

    Anything wrong with the file is a ValueError (FileNotFoundError when it is missing)
    whose one-line message names the file, so every CLI can print it as is.
    """
    path = Path(path)
    content = read_yaml(path)
    if content is None:
        raise ValueError(f"config file {path} is empty: it holds no settings")
    if not isinstance(content, Mapping):
        raise ValueError(f"config file {path} must hold a mapping of settings")
    if "config" in content:
        settings = content["config"]
        if not isinstance(settings, Mapping):
            raise ValueError(f"the 'config' key of {path} must hold a mapping of settings")
        metadata = {k: v for k, v in content.items() if k != "config"}
        return ConfigFile(settings=dict(settings), metadata=metadata)
    return ConfigFile(settings=dict(content))


def read_yaml(path: str | Path, *, what: str = "config file") -> Any:
    """A small YAML file's content through `yaml.safe_load` (nothing in it can create Python
    objects); ValueError (FileNotFoundError when missing) with one line naming `what` and the file."""
    path = Path(path)
    return _parse_yaml(path, _read_text(path, what), what)


def _read_text(path: Path, what: str) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory, not a YAML file")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a regular file")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise ValueError(f"cannot read {what} {path}: {error.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ValueError(f"{what} {path} is larger than {MAX_BYTES // 1024} KiB: not a run's settings")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text, so not YAML") from None


def _parse_yaml(path: Path, text: str, what: str) -> Any:
    """`yaml.safe_load`, whose errors (several lines, or a RecursionError) become one line."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        # PyYAML composes nested collections recursively: 10,000 nested lists exhaust the stack.
        raise ValueError(f"{what} {path} is nested too deeply to be a run's settings") from None
    except yaml.constructor.ConstructorError as error:
        tag = _UNKNOWN_TAG.search(error.problem or "")
        if tag is None:
            raise ValueError(f"{what} {path}{_where(error)}: {error.problem}") from None
        shown = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        raise ValueError(
            f"{what} {path}{_where(error)} contains the tag {shown}, which is not allowed: "
            "a config holds plain values only (nothing in it may create Python objects)"
        ) from None
    except yaml.MarkedYAMLError as error:
        raise ValueError(f"{what} {path} is not valid YAML{_where(error)}: {error.problem}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{what} {path} is not valid YAML: {' '.join(str(error).split())}") from None


def _where(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark
    return "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"


def write_config_file(path: str | Path, settings: Mapping[str, Any], metadata: Mapping[str, Any]) -> Path:
    """Write settings plus metadata in the replayable form; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**metadata, "config": dict(settings)}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
