"""Loading a transformers classifier from a local folder, the one way `bert` and `cvt13` do it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def from_local_folder(model_class: Any, pretrained: str, *, num_classes: int) -> tuple[Any, Path]:
    """`model_class` (a transformers `...For...Classification`) as saved in the folder `pretrained`,
    with a new head for `num_classes`, and the folder it came from (for error messages).

    Only local files are read (`local_files_only`): a sweep never downloads, and a
    missing folder is a FileNotFoundError naming the setting, not a hub lookup.
    """
    folder = Path(pretrained).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"setting 'pretrained': no config.json in {folder}")
    net = model_class.from_pretrained(
        str(folder), num_labels=num_classes, ignore_mismatched_sizes=True, local_files_only=True
    )
    return net, folder
