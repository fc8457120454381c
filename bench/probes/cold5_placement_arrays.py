"""One-off, for BENCHMARKS.md "Cold placement, fifth round": train the shipped tower on a quality split (as
`appliance bench quality` does) and save, for its validation examples and its test customers, the tower's scores
(cosine + prior, the customer's products at -inf, no cold slots), the three cosines a placement may use (the tower's,
its text side's, the plain mean vector's), which products are cold at each moment, the positives, and each
history's length and the age in hours of its newest event (`cold7`'s per-shopper check); the analyses are
cold5_placement_grid.py, cold7_diagnose.py and cold7_slots.py.
Run: python bench/probes/cold5_placement_arrays.py DATASET DATASETS_DIR CACHE OUT.npz"""

import sys
from pathlib import Path

import numpy as np
import torch

from appliance.baselines import history_inputs, prior_popularity, tower_prior
from appliance.config import load_config
from appliance.evaluation import cold_items, test_targets, time_split
from appliance.examples import MomentPrior, batch_inputs, make_examples, split_validation
from appliance.interactions import seen_matrix
from appliance.prior import _cold_positives, _cold_products, scored_validation
from appliance.tower import mean_vector, user_vectors
from appliance.training import train_tower
from web.bench.quality import embed, interactions_of, load_dataset


def main(name, datasets, cache, out):
    torch.set_num_threads(1)
    config = load_config(None)
    products, events = load_dataset(name, Path(datasets), config)
    vectors = embed(products, config, Path(cache))
    split = time_split(interactions_of(products, events), config.evaluation.holdout)
    n, weights, tr = len(products), dict(config.events.weights), config.training
    half = config.tower.recency_half_life_hours
    model, _ = train_tower(split.train, vectors, config.tower, tr, weights, tr.prior_half_life_hours)
    # validation: the examples training chose them from, with its seed
    _, val = split_validation(make_examples(split.train, config.tower.history, 0.0), split.train,
                              tr.validation_fraction, np.random.default_rng(tr.seed), tr.validation_examples)
    prior = MomentPrior(split.train, n, weights, tr.prior_half_life_hours)
    table = torch.as_tensor(vectors)
    v = {"scores": [], "tower": [], "text": [], "mean": [], "cold": [], "rel": [], "len": [], "age": []}
    for _, ex, scores, cosines, relevant in scored_validation(model, val, split.train, table, prior):
        arrays = [t.numpy() for t in batch_inputs(ex, split.train, table)]
        v["scores"].append(scores)
        v["tower"].append(cosines)
        v["text"].append(user_vectors(model, *arrays, attention=False) @ vectors.T)
        v["mean"].append(mean_vector(*arrays, weights, half) @ vectors.T)
        v["cold"].append(np.broadcast_to(_cold_products(ex, split.train, prior), scores.shape))
        v["rel"].append(relevant)
        v["len"].append(arrays[3].sum(1))
        v["age"].append(newest_age(arrays[2], arrays[3]))
    # test: every customer with a new test product, as the tower row ranks them without cold slots
    popularity = prior_popularity(split.train, n, weights, tr.prior_as_of, tr.prior_half_life_hours)
    customers, at, relevant, mask = test_targets(split, n)
    arrays = history_inputs(split.train, vectors, customers, at, config.tower.history)
    tower = user_vectors(model, *arrays) @ vectors.T
    scores = tower + model.popularity_weight.item() * tower_prior(model, popularity, customers, at)
    scores[seen_matrix(split.train, customers, n)] = -np.inf
    cold = cold_items(split, n)
    on_slice = np.isin(customers, test_targets(split, n, cold)[0])
    np.savez(out, **{f"v_{k}": np.concatenate(x) for k, x in v.items()}, vcoldpos=_cold_positives(val, prior),
             v_moment=split.train.ts[val.target], t_scores=scores, t_tower=tower,
             t_text=user_vectors(model, *arrays, attention=False) @ vectors.T,
             t_mean=mean_vector(*arrays, weights, half) @ vectors.T, t_cold=~popularity.known(at), t_rel=relevant,
             t_mask=mask, is_c=on_slice, crel_mask=mask & cold[relevant], t_len=arrays[3].sum(1),
             t_age=newest_age(arrays[2], arrays[3]))


def newest_age(ages, mask):
    """(B,) hours since each history's newest event."""
    return np.where(mask, ages, np.inf).min(1)


if __name__ == "__main__":
    main(*sys.argv[1:5])
