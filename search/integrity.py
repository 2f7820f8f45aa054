"""`--resume` lets Ray Tune unpickle only what this sweep's driver wrote: a keyed seal.

Tune's resume unpickles files from the storage path: `tuner.pkl`, the searcher
and search-generator states, callback states and cloudpickle blobs inside the
experiment state. Unpickling runs code, so a storage path that someone else
could write to would run their code in the driver. The driver therefore seals
every such file it lets Tune write: an HMAC-SHA256, keyed by a secret kept
outside the storage path, over each file's SHA-256. `--resume` verifies every
one before Tune reads any and refuses a file that is not in the seal or that
differs from what was sealed: altered by someone, or damaged (a disk that
filled while Tune copied it). A refused state is never read; the sweep can
start again under its id (`--resume --restart`).

The seal is written beside the files, before Tune copies them from its local
staging folder to the storage path, and accepts each file's last few sealed
versions: a driver killed in the middle of that copy leaves a mix of old and
new files that still verifies. Its name is not `.json`/`.pkl` because Tune
copies those from the storage path to its staging folder and back.

Not covered (README, "What the storage path is trusted with"): Tune's error
files of trials that fail during a run (read back by the same run), and the
trials' checkpoints, which the Trainable reads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

KEY_FILE_ENV = "LERAC_STATE_KEY_FILE"
SEAL_FILE = "tune-state.seal"
GENERATIONS = 3  # sealed versions of a file still accepted (a copy cut off mid-way)
OWN_FILES = frozenset({"sweep_state.json"})  # ours, read as plain JSON and validated
# A dict checkpoint that Ray's Trainable.restore unpickles; ours never writes one.
DICT_CHECKPOINT = "_dict_checkpoint.pkl"


class StateRefused(Exception):
    """The saved state cannot be trusted or restored; the message says why in one line."""


def key_path() -> Path:
    """Where the sealing key lives: $LERAC_STATE_KEY_FILE, else ~/.config/lerac-search/state.key."""
    configured = os.environ.get(KEY_FILE_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return (base / "lerac-search" / "state.key").resolve()


def load_key(storage_path: Path) -> bytes:
    """The sealing key, created (32 random bytes, mode 0600) on first use.

    Refuses a key inside the storage path: whoever can write the state could
    then also forge its seal.
    """
    path = key_path()
    if path.is_relative_to(storage_path.resolve()):
        raise StateRefused(f"the state key {path} is inside the storage path {storage_path}: "
                           f"keep it elsewhere (set {KEY_FILE_ENV})")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(os.urandom(32))
        try:
            os.link(draft, path)  # atomic: two sweeps starting together agree on one key
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    key = path.read_bytes()
    if len(key) < 16:
        raise StateRefused(f"the state key {path} is shorter than 16 bytes")
    return key


def sealed_names(folder: Path) -> list[str]:
    """The files of an experiment folder that Tune may unpickle on resume.

    Hidden files are Tune's drafts (`.<uuid>-tmp-...`), which its restore never reads.
    """
    return sorted(entry.name for entry in folder.iterdir()
                  if entry.is_file() and entry.suffix in (".pkl", ".json")
                  and not entry.name.startswith(".") and entry.name not in OWN_FILES)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mac(key: bytes, sweep_id: str, files: dict[str, list[str]]) -> str:
    message = json.dumps({"sweep_id": sweep_id, "files": files}, sort_keys=True).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class Seal:
    """The accepted digests of a sweep's Tune state, kept current as Tune saves."""

    def __init__(self, *, sweep_dir: Path, sweep_id: str, key: bytes, files: dict[str, list[str]] | None = None):
        self.sweep_dir = sweep_dir
        self.sweep_id = sweep_id
        self._key = key
        self.files: dict[str, list[str]] = dict(files or {})

    def __reduce__(self):
        raise TypeError("a Seal holds the state key and is never pickled")

    def add(self, folder: Path, names: list[str] | None = None) -> None:
        """Accept the current content of `names` (default: every sealed file) in `folder`, then write."""
        for name in sealed_names(folder) if names is None else names:
            new = digest(folder / name)
            self.files[name] = [new] + [old for old in self.files.get(name, []) if old != new][: GENERATIONS - 1]
        self.write()

    def write(self) -> None:
        document = {"sweep_id": self.sweep_id, "files": self.files,
                    "mac": _mac(self._key, self.sweep_id, self.files)}
        draft = self.sweep_dir / f".{SEAL_FILE}.{os.getpid()}"
        draft.write_text(json.dumps(document, indent=1, sort_keys=True))
        os.replace(draft, self.sweep_dir / SEAL_FILE)

    @classmethod
    def verify(cls, *, sweep_dir: Path, sweep_id: str, key: bytes) -> Seal:
        """The sweep's seal, after checking it and every file Tune would unpickle against it."""
        path = sweep_dir / SEAL_FILE
        if not path.is_file():
            raise StateRefused(f"its saved state has no seal ({path} is missing), so nothing proves "
                               "this sweep's driver wrote it")
        try:
            document = json.loads(path.read_text())
            files = {str(name): [str(d) for d in digests] for name, digests in document["files"].items()}
            mac = str(document["mac"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StateRefused(f"its seal {path} is damaged") from None
        if document.get("sweep_id") != sweep_id or not hmac.compare_digest(mac, _mac(key, sweep_id, files)):
            raise StateRefused(f"its seal {path} does not verify with the key {key_path()} (sealed with "
                               f"another key, or altered): copy the key of the machine that started "
                               f"the sweep there, or set {KEY_FILE_ENV}")
        for name in sealed_names(sweep_dir):
            if digest(sweep_dir / name) not in files.get(name, []):
                why = "is not in its seal" if name not in files else "differs from what the sweep wrote"
                raise StateRefused(f"{sweep_dir / name} {why} (altered, or cut short when the disk "
                                   "filled), so it will not be unpickled")
        planted = next(sweep_dir.glob(f"*/checkpoint_*/{DICT_CHECKPOINT}"), None)
        if planted is not None:
            raise StateRefused(f"{planted} is a pickle this sweep never writes and Ray would unpickle")
        return cls(sweep_dir=sweep_dir, sweep_id=sweep_id, key=key, files=files)
