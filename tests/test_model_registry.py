"""Model checkpoints: self-describing, weights_only round trip, monotonic versions, atomic promotion."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from appliance.config import load_config
from appliance.errors import NotFound
from appliance.tower import UserTower, user_vectors
from storage.models import ModelMeta, ModelRegistry, load_checkpoint, save_checkpoint

torch.set_num_threads(2)
D = 384


def model(seed=0, **changes):
    torch.manual_seed(seed)
    tower = UserTower(dataclasses.replace(load_config().tower, **changes), D)
    with torch.no_grad():
        tower.out.weight.normal_(0, 0.05)  # not the zero init, so a lost tensor would show
    return tower.eval()


def meta(ndcg=0.2):
    return ModelMeta(
        encoder_model="all-MiniLM-L6-v2", data_first=1.7e9, data_last=1.7e9 + 86400,
        metrics={"ndcg@10": ndcg, "mrr": 0.1}, training={"epochs": 3, "losses": [3.0, 2.5]},
    )


def batch():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(3, 20, D)).astype(np.float32), rng.integers(6, size=(3, 20)),
            rng.uniform(0, 50, size=(3, 20)).astype(np.float32), np.ones((3, 20), bool))


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    original = model(layers=2, width=64)
    save_checkpoint(tmp_path / "m.pt", original, meta())
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # plain containers and tensors only
    assert payload["meta"]["tower"]["layers"] == 2 and payload["meta"]["dim"] == D
    loaded, info = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config == original.config  # rebuilt from the file alone
    np.testing.assert_array_equal(user_vectors(loaded, *batch()), user_vectors(original, *batch()))
    assert info.metrics["ndcg@10"] == 0.2 and info.encoder_model == "all-MiniLM-L6-v2"
    assert (info.data_first, info.data_last) == (1.7e9, 1.7e9 + 86400)
    assert list(tmp_path.iterdir()) == [tmp_path / "m.pt"]  # no temp file left behind


def test_a_checkpoint_of_an_older_format_is_refused_with_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "m.pt", model(), meta())
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({**payload, "format": 1}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="format 1.*train a new model"):
        load_checkpoint(tmp_path / "m.pt")


def test_pruning_keeps_the_newest_checkpoints_and_always_the_serving_one(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    versions = [registry.save_candidate(model(seed), meta()) for seed in range(5)]
    registry.promote(versions[1])
    assert registry.prune(keep=2) == [versions[0], versions[2]]
    assert [c["version"] for c in registry.candidates()] == [versions[1], *versions[3:]]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(
        [f"{v}.{ext}" for v in [versions[1], *versions[3:]] for ext in ("pt", "json")] + ["serving.json"]
    )
    assert registry.serving()[1].version == versions[1] and registry.prune(keep=2) == []


def test_empty_registry_serves_nothing(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    assert registry.serving() is None and registry.candidates() == []
    with pytest.raises(NotFound):
        registry.promote("20200101T000000.000000Z")


def test_versions_increase_and_promotion_switches_the_served_model(tmp_path):
    registry = ModelRegistry(tmp_path)
    first = registry.save_candidate(model(1), meta(0.2))
    second = registry.save_candidate(model(2), meta(0.3))
    third = registry.save_candidate(model(3), meta(0.1))
    assert first < second < third
    assert registry.serving() is None
    registry.promote(first)
    served, info = registry.serving()
    assert info.version == first
    np.testing.assert_array_equal(user_vectors(served, *batch()), user_vectors(model(1), *batch()))
    registry.promote(second)
    registry.reject(third)
    assert registry.serving()[1].version == second
    statuses = {c["version"]: (c["status"], c["metrics"]["ndcg@10"]) for c in registry.candidates()}
    assert statuses == {first: ("candidate", 0.2), second: ("serving", 0.3), third: ("rejected", 0.1)}
    assert json.loads((tmp_path / "serving.json").read_text()) == {"version": second}
    with pytest.raises(ValueError):
        registry.reject(second)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_new_registry_object_sees_the_same_state(tmp_path):
    version = ModelRegistry(tmp_path).save_candidate(model(), meta())
    ModelRegistry(tmp_path).promote(version)
    assert ModelRegistry(tmp_path).serving()[1].version == version


def test_decide_uses_the_promotion_rule(tmp_path):
    decide = ModelRegistry(tmp_path).decide
    assert decide({"ndcg@10": 0.3}, {"ndcg@10": 0.2}, {"ndcg@10": 0.1})
    assert not decide({"ndcg@10": 0.3}, {"ndcg@10": 0.4}, {"ndcg@10": 0.1})
    assert not decide({"ndcg@10": 0.3}, None, {"ndcg@10": 0.3})
