"""Any serving model that cannot be read falls back to the mean vector: the app gets ready, feeds stay personal,
and GET /model says which file failed and why (it used to stay 503 forever, or answer 500)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.tower import UserTower
from storage.models import ModelMeta, ModelRegistry
from tests.helpers import LOCAL, small_catalog, wait_embedded, wait_until
from web.app import create_app


class Payload:
    """A pickle that would create a file if it were ever unpickled with code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def promoted(models: Path) -> tuple[ModelRegistry, Path]:
    torch.manual_seed(0)
    registry = ModelRegistry(models)
    version = registry.save_candidate(UserTower(load_config().tower, 384), ModelMeta("all-MiniLM-L6-v2", 0.0, 1.0))
    registry.promote(version)
    return registry, models / f"{version}.pt"


def _serving(text: str) -> Callable[[Path], None]:
    return lambda pt: (pt.parent / "serving.json").write_text(text)


def _truncate(pt: Path) -> None:
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "random checkpoint": (lambda pt: pt.write_bytes(bytes(range(256)) * 64), "cannot be loaded"),
    "truncated checkpoint": (_truncate, "cannot be loaded"),
    "missing checkpoint": (lambda pt: pt.unlink(), "no model version"),
    "pickle payload": (lambda pt: pt.write_bytes(pickle.dumps(Payload(pt.parent / "pwned"))), "cannot be loaded"),
    "serving.json names a missing version": (_serving('{"version": "20990101T000000.000000Z"}'), "no model version"),
    "garbled serving.json": (_serving('{"vers'), "serving.json cannot be read"),
    "serving.json without a version": (_serving("[]"), "serving.json cannot be read"),
    "another checkpoint format": (
        lambda pt: torch.save({"format": 1, "meta": {}, "state_dict": {}}, pt), "checkpoint format 1"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_an_unreadable_serving_model_falls_back_to_the_mean_vector(damage, tmp_path, encoder):
    data = tmp_path / "data"
    _, pt = promoted(data / "models")
    change, reason = DAMAGE[damage]
    change(pt)
    config = load_config(overrides={"server": {"data_dir": str(data), "load_demo": False}, "jobs": {"enabled": False}})
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        model = client.get("/model")
        assert model.status_code == 200, model.text
        body = model.json()
        assert body["version"] == "mean" and body["fallback"]
        assert reason in body["fallback_reason"] and "mean of recent product vectors" in body["fallback_reason"]
        assert client.post("/products", json=small_catalog()).status_code == 202
        wait_embedded(client)
        assert client.post("/events", json={"customer_id": 3, "product_id": 2, "event_name": "product_clicked"}
                           ).status_code == 202
        wait_until(lambda: client.get("/customers/3/feed").json()["personalized"], what="a fallback vector")
    assert not (pt.parent / "pwned").exists()  # weights_only refused the payload


def test_a_garbled_sidecar_is_listed_as_unreadable_and_the_model_still_serves(tmp_path, encoder):
    data = tmp_path / "data"
    _, pt = promoted(data / "models")
    pt.with_suffix(".json").write_text("{garbled")
    config = load_config(overrides={"server": {"data_dir": str(data), "load_demo": False}, "jobs": {"enabled": False}})
    with TestClient(create_app(config, encoder=encoder), base_url=LOCAL) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        body = client.get("/model").json()
        assert body["version"] == pt.stem and not body["fallback"]
        (listed,) = body["candidates"]
        assert listed["version"] == pt.stem and listed["status"] == "serving" and "JSONDecodeError" in listed["error"]
        (data / "models" / "serving.json").write_text("not json")  # garbled while serving: /model still answers
        body = client.get("/model").json()
        assert body["version"] == pt.stem and body["candidates"][0]["status"] == "unreadable"
