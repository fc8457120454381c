"""User-tower checkpoints on disk and the pointer to the one being served.

Layout of a registry directory:
    <version>.pt     the checkpoint: everything needed to rebuild the model (loaded with weights_only=True)
    <version>.json   its metadata without the weights, plus a status ("candidate" or "rejected")
    serving.json     {"version": ...}: the served checkpoint, switched atomically by `promote`
Every file is written to a temp file in the same directory, then os.replace'd into place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch

from appliance.config_sections import TowerConfig
from appliance.errors import ModelUnreadable, NotFound
from appliance.evaluation import should_promote
from appliance.tower import UserTower

FORMAT = 2  # 2: the tower has a popularity prior and no output bias; older checkpoints must be retrained
VERSION_FORMAT = "%Y%m%dT%H%M%S.%fZ"  # fixed width, so string order is time order
SERVING = "serving.json"


@dataclass(frozen=True)
class ModelMeta:
    """What a checkpoint says about itself besides its weights."""

    encoder_model: str  # the product-vector model the tower was trained against
    data_first: float  # training window: first event time, seconds since epoch
    data_last: float  # last event time
    metrics: Mapping[str, Any] = field(default_factory=dict)  # e.g. the `evaluate` row of this model
    training: Mapping[str, Any] = field(default_factory=dict)  # e.g. TrainReport.as_dict()
    version: str = ""  # set by the registry
    tower: Mapping[str, Any] = field(default_factory=dict)  # TowerConfig as a dict, set on save
    dim: int = 0  # product-vector dimensions, set on save
    evaluation: Mapping[str, Any] = field(default_factory=dict)  # every model's row on the split it was judged on
    decision: str = ""  # why it was (or was not) promoted

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # plain, JSON-able containers only


def save_checkpoint(path: Path, model: UserTower, meta: ModelMeta) -> dict[str, Any]:
    """torch.save to a temp file beside `path`, then os.replace: readers never see half a file.

    Returns the metadata written (with the model's tower config and dim filled in).
    """
    meta = dataclasses.replace(meta, tower=dataclasses.asdict(model.config), dim=model.dim)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    payload = {"format": FORMAT, "meta": meta.as_dict(), "state_dict": state}
    _atomic_write(path, lambda f: torch.save(payload, f))
    return payload["meta"]


def load_checkpoint(path: Path) -> tuple[UserTower, ModelMeta]:
    """Rebuild the tower from the file alone (its own config and dim), with weights_only=True."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path.name} has checkpoint format {payload.get('format')}, this appliance reads "
                         f"{FORMAT}: train a new model")
    meta = ModelMeta(**payload["meta"])
    model = UserTower(TowerConfig(**meta.tower), meta.dim)
    state = payload["state_dict"]
    state.setdefault("cold_quantile", torch.zeros(()))  # saved before the cold-start prior: cold products at 0
    state.setdefault("cold_share", torch.zeros(()))  # saved before the cold slots: none
    model.load_state_dict(state)
    model.eval()
    return model, meta


class ModelRegistry:
    """Stores candidate checkpoints and which one serves. Deciding is `appliance.evaluation.should_promote`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def save_candidate(self, model: UserTower, meta: ModelMeta) -> str:
        """Write a new checkpoint (status "candidate") and return its version."""
        version = self._next_version()
        meta = dataclasses.replace(meta, version=version)
        written = save_checkpoint(self._pt(version), model, meta)
        self._write_json(self._sidecar(version), {**written, "status": "candidate"})
        return version

    def promote(self, version: str) -> None:
        """Make `version` the served model (one atomic rename of serving.json)."""
        self._require(version)
        self._set_status(version, "candidate")
        self._write_json(self.directory / SERVING, {"version": version})

    def reject(self, version: str) -> None:
        """Mark a candidate that lost its evaluation (kept on disk for inspection)."""
        self._require(version)
        if version == self._serving_or_none():
            raise ValueError(f"model {version} is serving and cannot be rejected")
        self._set_status(version, "rejected")

    def prune(self, keep: int) -> list[str]:
        """Delete all but the `keep` newest checkpoints, never the serving one; returns the deleted versions."""
        serving = self._serving_or_none()
        versions = sorted(p.stem for p in self.directory.glob("*.pt"))
        doomed = [v for v in versions[:max(len(versions) - keep, 0)] if v != serving]
        for version in doomed:
            self._sidecar(version).unlink(missing_ok=True)
            self._pt(version).unlink()
        return doomed

    def serving_version(self) -> str | None:
        """The promoted version, None when none was; raises ModelUnreadable when serving.json is garbled."""
        path = self.directory / SERVING
        if not path.exists():
            return None
        try:
            version = json.loads(path.read_text())["version"]
            if not isinstance(version, str):
                raise TypeError(f"version is {type(version).__name__}, not a string")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelUnreadable(f"{SERVING} cannot be read ({type(exc).__name__}: {exc})") from exc
        return version

    def serving(self) -> tuple[UserTower, ModelMeta] | None:
        """The served model and its metadata, or None when no model has been promoted yet.

        Raises ModelUnreadable, saying why, for anything that cannot be loaded: a garbled serving.json, a
        missing, truncated or random checkpoint, a pickle payload (refused by weights_only), another format."""
        version = self.serving_version()
        if version is None:
            return None
        try:
            return self.load(version)
        except Exception as exc:  # torch.load alone raises a dozen types for bad input; each means "unreadable"
            raise ModelUnreadable(f"model {version} cannot be loaded ({type(exc).__name__}: {exc})") from exc

    def _serving_or_none(self) -> str | None:
        try:
            return self.serving_version()
        except ModelUnreadable:
            return None

    def load(self, version: str) -> tuple[UserTower, ModelMeta]:
        self._require(version)
        return load_checkpoint(self._pt(version))

    def candidates(self) -> list[dict[str, Any]]:
        """Every stored version, oldest first: {"version", "status", "metrics", "data_first", ...}; a sidecar
        that cannot be read is listed with status "unreadable" and the error."""
        serving = self._serving_or_none()
        out = []
        for sidecar in sorted(self.directory.glob("*.json")):
            if sidecar.name == SERVING or not self._pt(sidecar.stem).exists():
                continue
            try:
                info = json.loads(sidecar.read_text())
                if not isinstance(info, dict) or info.get("version") != sidecar.stem:
                    raise ValueError("not the metadata of this version")
            except (OSError, ValueError) as exc:
                info = {"version": sidecar.stem, "status": "unreadable", "error": f"{type(exc).__name__}: {exc}"}
            if info["version"] == serving:
                info["status"] = "serving"
            out.append(info)
        return out

    @staticmethod
    def decide(
        candidate_metrics: Mapping[str, float], serving_metrics: Mapping[str, float] | None,
        popularity_metrics: Mapping[str, float],
    ) -> bool:
        """The promotion rule, which lives in appliance.evaluation (see `should_promote`)."""
        return should_promote(candidate_metrics, serving_metrics, popularity_metrics)

    # -- helpers -------------------------------------------------------------------------------------

    def _pt(self, version: str) -> Path:
        return self.directory / f"{version}.pt"

    def _sidecar(self, version: str) -> Path:
        return self.directory / f"{version}.json"

    def _require(self, version: str) -> None:
        if not self._pt(version).exists():
            raise NotFound(f"no model version {version!r}")

    def _set_status(self, version: str, status: str) -> None:
        path = self._sidecar(version)
        info = json.loads(path.read_text()) if path.exists() else load_checkpoint_meta(self._pt(version))
        self._write_json(path, {**info, "status": status})

    def _next_version(self) -> str:
        """Timestamp-based and strictly increasing, even if the clock steps back or two saves share a tick."""
        moment = datetime.now(UTC).replace(tzinfo=None)
        existing = [p.stem for p in self.directory.glob("*.pt")]
        if existing:
            latest = datetime.strptime(max(existing), VERSION_FORMAT)
            moment = max(moment, latest + timedelta(microseconds=1))
        return moment.strftime(VERSION_FORMAT)

    def _write_json(self, path: Path, data: Mapping[str, Any]) -> None:
        text = json.dumps(data, indent=2, sort_keys=True)
        _atomic_write(path, lambda f: f.write(text.encode()))


def load_checkpoint_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's metadata as a plain dict (reads the whole file; the registry keeps a JSON copy)."""
    return torch.load(path, map_location="cpu", weights_only=True)["meta"]


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
