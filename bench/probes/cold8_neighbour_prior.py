"""One-off for BENCHMARKS.md "Cold-start, eighth round": a prior for new products from their text neighbours.
What buries a new product on the demo and retail is its prior term (0 against w x log(1 + popularity) of every
known one; "Cold-start, seventh round"), and a constant for all of them (`cold_start_prior`'s quantile) lifts the
wrong ones with the right. Here a product without events gets alpha x the mean prior term of its K nearest
products by product vector (as of the same moment: neighbours without events count 0), so a new product that
looks like what sells now competes in the whole list by score, with no slot and no second vector per shopper.
alpha is chosen on validation only (the prior's rule, `appliance.prior._by_rule`: within 2 % of the best overall
NDCG@10, the best on cold positives), on top of the tower's shipped cold share (its slots by its cosine).
Reads cold5_placement_arrays.py's arrays (the prior term is their scores minus the tower's cosines); run with
PYTHONPATH=.:bench/probes: python bench/probes/cold8_neighbour_prior.py DATASET DATASETS_DIR CACHE ARRAYS OUT"""

import json
import os
import sys
from pathlib import Path

import numpy as np
from cold7_slots import ndcg, slotted
from cold8_text_slots import line

from appliance.config import load_config
from appliance.evaluation import paired_difference
from appliance.prior import COLD_SHARES, _by_rule, pick_cold_share
from web.bench.quality import embed, load_dataset

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
NEIGHBOURS = (10, 30)


def nearest(vectors, k, chunk=1024):
    """(N, k) each product's k nearest other products by cosine."""
    out = np.empty((len(vectors), k), np.int64)
    for i in range(0, len(vectors), chunk):
        sim = vectors[i:i + chunk] @ vectors.T
        sim[np.arange(len(sim)), np.arange(i, i + len(sim))] = -np.inf
        out[i:i + chunk] = np.argpartition(-sim, k, axis=1)[:, :k]
    return out


def estimate(prior, neighbours, chunk=32):
    """(R, N) the mean prior term of each product's neighbours, per row."""
    return np.concatenate([prior[i:i + chunk][:, neighbours].mean(-1) for i in range(0, len(prior), chunk)])


def lifted(scores, cosines, cold, est, alpha):
    """The rows' scores with each live product without events at cosine + alpha x its neighbours' prior."""
    out = scores.copy()
    at = np.broadcast_to(cold, scores.shape) & np.isfinite(scores)
    out[at] = cosines[at] + alpha * est[at]
    return out


def main(name, datasets, cache, arrays, out_path):
    config = load_config(None)
    products, _ = load_dataset(name, Path(datasets), config)
    vectors = embed(products, config, Path(cache))
    d = np.load(arrays)
    vrel, vcold, ci = d["v_rel"], d["vcoldpos"], np.flatnonzero(d["is_c"])
    vmask = np.ones_like(vrel, bool)
    tlive = np.isfinite(d["t_scores"])
    mean_slice = ndcg(np.where(tlive, d["t_mean"], -np.inf)[ci], d["t_rel"][ci], d["crel_mask"][ci])
    parts = {p: (d[f"{p}_scores"], d[f"{p}_tower"], d[f"{p}_cold"]) for p in ("v", "t")}
    priors = {p: np.where(np.isfinite(s), s - c, 0.0) for p, (s, c, _) in parts.items()}
    cold_terms = {p: float(np.abs(priors[p][np.broadcast_to(parts[p][2], priors[p].shape)]).max()) for p in parts}
    # the shipped cold share, chosen again on these arrays exactly as training does (slots by the tower's cosine)
    vrows = np.stack([ndcg(s, vrel, vmask) for s in slotted(*parts["v"], COLD_SHARES)])
    share = COLD_SHARES[pick_cold_share(vrows, vcold, COLD_SHARES, "room", 0.0)]
    report = {"command": "python bench/probes/cold8_neighbour_prior.py " + " ".join(sys.argv[1:6]), "dataset": name,
              "load_average": os.getloadavg(), "shipped_share": share, "cold_prior_term_max": cold_terms,
              "mean_vector_slice": float(mean_slice.mean()), "grid": []}

    def rank(part, scores, rel, mask, rows=slice(None)):
        s, c, cold = parts[part]
        return ndcg(slotted(scores, c[rows], cold if cold.shape[0] == 1 else cold[rows], (share,))[0], rel, mask)

    base = shipped_slice = None
    for k in NEIGHBOURS:
        nn = nearest(vectors, k)
        est = {p: estimate(priors[p], nn) for p in parts}
        for alpha in ALPHAS:
            if alpha == 0.0 and k != NEIGHBOURS[0]:
                continue
            v = rank("v", lifted(*parts["v"], est["v"], alpha), vrel, vmask)
            t_scores = lifted(*parts["t"], est["t"], alpha)
            t = rank("t", t_scores, d["t_rel"], d["t_mask"])
            c = rank("t", t_scores[ci], d["t_rel"][ci], d["crel_mask"][ci], ci)
            if alpha == 0.0:
                base, shipped_slice = t, c
            report["grid"].append({"neighbours": k, "alpha": alpha, "v_rows": v, "validation_all": float(v.mean()),
                                   "validation_cold": float(v[vcold].mean()), "test_all": float(t.mean()),
                                   "test_slice": float(c.mean()), "all_vs_shipped": paired_difference(t, base),
                                   "slice_vs_shipped": paired_difference(c, shipped_slice),
                                   "slice_vs_mean_vector": paired_difference(c, mean_slice)})
    grid = report["grid"]
    chosen = _by_rule(np.stack([g.pop("v_rows") for g in grid]), vcold, [(-g["alpha"],) for g in grid])
    report["chosen"] = grid[chosen]
    print(f"{name}: shipped share {share}; cold prior term max {cold_terms}; mean vector slice {mean_slice.mean():.4f}")
    for i, g in enumerate(grid):
        print(line("*" if i == chosen else " ", f"K {g['neighbours']:<3} alpha {g['alpha']:<4}", g))
    Path(out_path).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:6])
