"""Versioned artifacts of the learned forecasters, and the bank the service serves from.

An artifact is a folder MODEL_DIR/<name>/ with meta.json and the files it lists, each with its
sha256. meta.json says the forecaster's name and version, the artifact format, the training
corpus' fingerprint, the tasks it was trained on (so an evaluation can hold them out) and its
held-out metrics. A folder whose version is not the one this code reads, or whose files do not
match their checksums, is refused with a message naming both versions; the bank keeps the
models it already has, so a bad upload never takes forecasts down.

A `ModelBank` is a value passed to whoever forecasts (the engine, `auto`, the evaluation and
the replay), never found in a module global (training makes models and reads none):
`forecaster serve` loads one at start and reloads it on SIGHUP or when a meta.json changes;
an evaluation's worker processes get its folder and load their own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecaster.errors import FailedPreconditionError

log = logging.getLogger("forecaster.models")

FORMAT = 1  # the layout of meta.json and its files; bumped when that changes
DEFAULT_DIR = Path(__file__).parent / "default_artifacts"
NO_MODELS = "none"  # FORECASTER_MODELS_DIR=none: serve the parametric models only


class ArtifactError(FailedPreconditionError):
    """An artifact that cannot be used: missing, corrupt, or from another version."""


@dataclass(frozen=True)
class Artifact:
    """A loaded artifact: its metadata and its files' bytes (checksums verified)."""

    name: str
    version: int
    meta: Mapping[str, Any]
    files: Mapping[str, bytes] = field(repr=False)
    path: Path | None = None

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("corpus_fingerprint", ""))


def save(
    root: str | Path,
    name: str,
    version: int,
    files: Mapping[str, bytes],
    meta: Mapping[str, Any],
) -> Path:
    """Writes ROOT/<name>/ atomically enough for a reload: the files first, meta.json last."""
    from forecaster import __version__

    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    for fname, data in files.items():
        (folder / fname).write_bytes(data)
        sums[fname] = hashlib.sha256(data).hexdigest()
    full = {
        "name": name,
        "version": version,
        "format": FORMAT,
        "forecaster_package": __version__,
        **dict(meta),
        "files": sums,
    }
    tmp = folder / "meta.json.tmp"
    tmp.write_text(json.dumps(full, indent=1, sort_keys=True, default=float))
    tmp.replace(folder / "meta.json")
    return folder


def load(root: str | Path, name: str, version: int) -> Artifact:
    """ROOT/<name>/ if it is this version and intact; ArtifactError saying why otherwise."""
    folder = Path(root) / name
    meta_file = folder / "meta.json"
    if not meta_file.exists():
        raise ArtifactError(f"no artifact {name!r} in {Path(root)} (no {meta_file.name}).")
    try:
        meta = json.loads(meta_file.read_text())
        found_version = int(meta["version"])
        found_format = int(meta.get("format", 0))
        sums = dict(meta["files"])
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(
            f"artifact {name!r} at {folder} is corrupt ({meta_file.name}: {e}); this code "
            f"reads {name} version {version}. Rebuild it with `forecaster train`."
        ) from None
    if found_format != FORMAT or found_version != version:
        raise ArtifactError(
            f"artifact {name!r} at {folder} is version {found_version} (format "
            f"{found_format}); this code reads {name} version {version} (format {FORMAT}). "
            "Rebuild it with `forecaster train`, or install the forecaster that made it."
        )
    files = {}
    for fname, digest in sums.items():
        path = folder / fname
        data = path.read_bytes() if path.exists() else b""
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactError(
                f"artifact {name!r} at {folder} is corrupt: {fname} does not match its "
                f"checksum in meta.json (artifact version {found_version}; this code reads "
                f"version {version}). Rebuild it with `forecaster train`."
            )
        files[fname] = data
    return Artifact(name, found_version, meta, files, folder)


def stamp(folder: str | Path) -> tuple[tuple[str, float], ...]:
    """What changes when any artifact under folder is rewritten (meta.json mtimes)."""
    root = Path(folder)
    if not root.is_dir():
        return ()
    return tuple(
        (str(p), p.stat().st_mtime) for p in sorted(root.glob("*/meta.json")) if p.exists()
    )


class ModelBank:
    """The learned models in use, by name. Thread-safe; replaced wholesale per model.

    `ModelBank.load("")` loads the shipped defaults, `ModelBank.load("none")` (or
    `ModelBank(None)`) is a bank with no models: the learned names fall back to power_law.
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.refused: dict[str, str] = {}
        self._stamp: tuple[tuple[str, float], ...] = ()
        # The conformal tables (models/calibration.py) applied to every forecast; None: the
        # forecasters' own intervals.
        self._calibration: Any | None = None
        self._pending = False  # a lazy bank not loaded yet (see load)
        self._loading = False
        self._load_lock = threading.RLock()

    @classmethod
    def load(cls, setting: str | None, *, lazy: bool = False) -> ModelBank:
        """The bank of the folder a setting names (see `folder_from_setting`), loaded; with
        lazy, loaded on its first read (a batch's driver, which only hands it to its workers,
        never pays for torch and lightgbm)."""
        bank = cls(folder_from_setting(setting))
        if lazy:
            bank._pending = bank.folder is not None
        else:
            bank.reload()
        return bank

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # A bank travels to a worker process as its folder, and the worker loads its own,
        # once (received_bank).
        return received_bank, (NO_MODELS if self.folder is None else str(self.folder),)

    def _ensure_loaded(self) -> None:
        """A lazy bank's load, on its first read. Other threads wait for it; the loading
        thread's own reads (the ensemble's loader reads its members) see it as it fills."""
        if not self._pending:
            return
        with self._load_lock:
            if self._pending and not self._loading:
                self._loading = True
                try:
                    self.reload()
                finally:
                    self._loading, self._pending = False, False

    @property
    def calibration(self) -> Any | None:
        self._ensure_loaded()
        return self._calibration

    def get(self, name: str) -> Any | None:
        self._ensure_loaded()
        with self._lock:
            return self._models.get(name)

    def meta_of(self, name: str) -> Mapping[str, Any]:
        """The meta.json of the loaded model called name ({} when none is loaded)."""
        model = self.get(name)
        return {} if model is None else dict(model.meta)

    def names(self) -> list[str]:
        self._ensure_loaded()
        with self._lock:
            return sorted(self._models)

    def put(self, name: str, model: Any) -> None:
        with self._lock:
            self._models[name] = model

    def reload(self) -> dict[str, str]:
        """Loads every learned forecaster's artifact from the folder; a model that fails keeps
        its previous version. Returns name -> "loaded vN" or the reason it was refused."""
        from forecaster.models.base import learned_loaders

        outcome: dict[str, str] = {}
        if self.folder is None:
            return outcome
        self._stamp = stamp(self.folder)
        for name, loader in learned_loaders().items():
            if not (self.folder / name).exists():
                continue
            try:
                model = loader(self.folder, self)
            except ArtifactError as e:
                outcome[name] = str(e)
                self.refused[name] = str(e)
                kept = " (keeping the loaded one)" if self.get(name) is not None else ""
                log.error("refused model artifact%s: %s", kept, e)
                continue
            self.put(name, model)
            self.refused.pop(name, None)
            outcome[name] = f"loaded version {model.version}"
            log.info("loaded model %s version %s from %s", name, model.version, self.folder)
        self._reload_calibration(outcome)
        return outcome

    def _reload_calibration(self, outcome: dict[str, str]) -> None:
        from forecaster.models import calibration

        if self.folder is None or not (self.folder / calibration.NAME).exists():
            return
        try:
            self._calibration = calibration.load(self.folder)
        except ArtifactError as e:
            outcome[calibration.NAME] = str(e)
            self.refused[calibration.NAME] = str(e)
            log.error("refused the calibration tables (keeping the loaded ones): %s", e)
            return
        self.refused.pop(calibration.NAME, None)
        outcome[calibration.NAME] = f"loaded version {calibration.VERSION}"

    def changed(self) -> bool:
        """True when an artifact's meta.json was written since the last reload (a lazy bank
        not loaded yet has not changed: it will read what is there)."""
        return self.folder is not None and not self._pending and stamp(self.folder) != self._stamp


# The banks this process received from another (a batch's or a replay's worker, sent one
# with every job), by folder: loaded once per process, lazily, and again only when an
# artifact changes. The one table a process keeps across calls (docs/DESIGN.md): a worker
# has no caller that could hold it, and a load per job cost ~75 ms a job (torch and lightgbm
# already imported).
_RECEIVED: dict[str, ModelBank] = {}
_RECEIVED_LOCK = threading.Lock()


def received_bank(setting: str) -> ModelBank:
    """The bank a pickled ModelBank becomes in the process that unpickles it: this
    process's bank of that folder (lazily loaded), kept while its artifacts are unchanged."""
    with _RECEIVED_LOCK:
        kept = _RECEIVED.get(setting)
        if kept is None or kept.changed():
            kept = _RECEIVED[setting] = ModelBank.load(setting, lazy=True)
        return kept


def folder_from_setting(setting: str | None) -> Path | None:
    """The artifact folder a setting names: "" -> the packaged defaults, "none" -> none."""
    if setting is None or setting == "":
        return DEFAULT_DIR if DEFAULT_DIR.is_dir() else None
    if setting.lower() == NO_MODELS:
        return None
    return Path(setting)
