"""One-off for BENCHMARKS.md "Cold-start, seventh round": the cold slots (`ranking.cold_slots`) ranked by each user
side (the tower's cosine, its text side, the plain mean vector), at each share, optionally gated per shopper (a
shopper gets the slots only when its best new product's cosine is at least `gate`, a quantile of validation's),
on validation and test from cold5_placement_arrays.py's arrays; two choice rules on validation: the shipped one
(within 2 % of the best overall NDCG@10, best on cold positives) and "cold NDCG@10 at least the mean vector's on
validation, at the least overall cost". Test figures paired against the unslotted tower (overall) and the mean
vector (slice). Run: python bench/probes/cold7_slots.py DATASET ARRAYS.npz OUT.json [SIGNALS [ranks|noranks]]"""

import json
import os
import sys
from pathlib import Path

import numpy as np

from appliance.evaluation import paired_difference, ranking_metrics
from appliance.ranking import cold_slotted_each

SHARES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
GATES = (0.0, 0.5, 0.75, 0.9)  # quantiles of validation's best-cold cosine; 0: every shopper
TOPS = (10, 20, 50)  # or only the new products among the shopper's K most similar of all (by the same cosine)
RANKS = (1, 2, 3, 5, 10, 20)  # a new product whose rank by the cosine alone is r <= K takes place r of the list
SIGNALS = ("tower", "text", "mean")


def ndcg(scores, relevant, mask, chunk=128):
    out = []
    for i in range(0, len(scores), chunk):
        sl = slice(i, i + chunk)
        out.append(ranking_metrics(scores[sl], relevant[sl], mask[sl], (10,))["ndcg@10"])
    return np.concatenate(out)


def slotted(scores, signal, cold, shares):
    """NDCG-ready score rows per share (depth 10: the first 10 places are cold_slots' at any depth)."""
    return cold_slotted_each(scores, signal, cold, shares, 10)


def at_cosine_rank(scores, signal, cold, k, depth=10):
    """Score rows whose first `depth` places are the tower's order (by `scores`) with every product without
    events whose rank by `signal` alone (among the row's live products) is r <= k put at place r."""
    out = scores.copy()
    live = np.isfinite(scores)
    for r in range(len(scores)):
        by_cosine = np.argsort(-np.where(live[r], signal[r], -np.inf), kind="stable")[:k]
        placed = {p: c for p, c in enumerate(by_cosine) if cold[r, c] and live[r, c]}
        if not placed:
            continue
        rest = (c for c in np.argsort(-scores[r], kind="stable") if c not in placed.values())
        order = [placed[p] if p in placed else next(rest) for p in range(depth)]
        out[r, order] = scores[r, order[0]] + np.arange(depth, 0, -1)
    return out


def kth(scores, signal, k):
    """(R, 1) each row's k-th highest `signal` among its live products."""
    live = np.where(np.isfinite(scores), signal, -np.inf)
    return -np.partition(-live, k - 1, axis=1)[:, k - 1:k]


def best_cold(scores, signal, cold):
    return np.where(np.isfinite(scores) & cold, signal, -np.inf).max(1)


def main(name, arrays, out_path, signals="tower,text,mean", with_ranks="ranks"):
    signals, with_ranks = signals.split(","), with_ranks == "ranks"
    d = np.load(arrays)
    vrel = d["v_rel"]
    vmask = np.ones_like(vrel, bool)
    vcold = d["vcoldpos"]
    ci = np.flatnonzero(d["is_c"])
    vlive, tlive = np.isfinite(d["v_scores"]), np.isfinite(d["t_scores"])
    mean_val = ndcg(np.where(vlive, d["v_mean"], -np.inf), vrel, vmask)
    mean_slice = ndcg(np.where(tlive, d["t_mean"], -np.inf)[ci], d["t_rel"][ci], d["crel_mask"][ci])
    base_all = ndcg(d["t_scores"], d["t_rel"], d["t_mask"])
    report = {"command": "python bench/probes/cold7_slots.py " + " ".join(sys.argv[1:4]), "dataset": name,
              "load_average": os.getloadavg(), "mean_vector": {"validation_cold": float(mean_val[vcold].mean()),
                                                               "validation_all": float(mean_val.mean()),
                                                               "test_slice": float(mean_slice.mean())},
              "grid": []}
    stored = Path(f"bench/results/quality_{name}_quality6.json")
    if stored.exists():  # the arrays' tower against the stored run's (the same training, the same split)
        rows = json.loads(stored.read_text())["evaluation"]["per_customer"]
        same = np.asarray(rows.get("tower_no_slots", rows["tower"]))
        report["unslotted_vs_stored"] = float(np.abs(base_all - same).max()) if len(same) == len(base_all) else None
        print(f"unslotted tower against {stored.name}'s: max per-customer difference {report['unslotted_vs_stored']}")
    print(f"{name}: mean vector validation all {mean_val.mean():.4f} cold {mean_val[vcold].mean():.4f}; test slice "
          f"{mean_slice.mean():.4f}; tower unslotted test all {base_all.mean():.4f}")
    def add(sig, gate_kind, gate, shares, vrows, trows, crows, gated, rank=None):
        for share, v, t, c in zip(shares, vrows, trows, crows, strict=True):
            if share == 0.0 and (sig, gate_kind) != (SIGNALS[0], 0.0):
                continue  # share 0 is the unslotted tower whatever the signal and gate
            report["grid"].append({
                "signal": sig, "gate_quantile": gate_kind, "gate": gate, "share": share, "rank": rank,
                "gated_shoppers_validation": gated,
                "validation_all": float(v.mean()), "validation_cold": float(v[vcold].mean()),
                "test_all": float(t.mean()), "test_slice": float(c.mean()),
                "all_vs_unslotted": paired_difference(t, base_all),
                "slice_vs_mean_vector": paired_difference(c, mean_slice)})

    def measure(sig, vc, tc, shares):
        return ([ndcg(s, vrel, vmask) for s in slotted(d["v_scores"], d[f"v_{sig}"], vc, shares)],
                [ndcg(s, d["t_rel"], d["t_mask"]) for s in slotted(d["t_scores"], d[f"t_{sig}"], tc, shares)],
                [ndcg(s, d["t_rel"][ci], d["crel_mask"][ci])
                 for s in slotted(d["t_scores"][ci], d[f"t_{sig}"][ci], tc[ci], shares)])

    for sig in signals:
        vbest = best_cold(d["v_scores"], d[f"v_{sig}"], d["v_cold"])
        tbest = best_cold(d["t_scores"], d[f"t_{sig}"], d["t_cold"])
        for q in GATES:
            gate = float(np.quantile(vbest[np.isfinite(vbest)], q)) if q else -np.inf
            vc = d["v_cold"] & (vbest >= gate)[:, None]
            tc = d["t_cold"] & (tbest >= gate)[:, None]
            add(sig, q, gate, SHARES, *measure(sig, vc, tc, SHARES), float((vbest >= gate).mean()))
        for k in TOPS:
            vc = d["v_cold"] & (d[f"v_{sig}"] >= kth(d["v_scores"], d[f"v_{sig}"], k))
            tc = d["t_cold"] & (d[f"t_{sig}"] >= kth(d["t_scores"], d[f"t_{sig}"], k))
            add(sig, f"top{k}", None, SHARES[1:], *measure(sig, vc, tc, SHARES[1:]), float(vc.any(1).mean()))
        for k in RANKS if with_ranks else ():
            v = ndcg(at_cosine_rank(d["v_scores"], d[f"v_{sig}"], d["v_cold"], k), vrel, vmask)
            t = ndcg(at_cosine_rank(d["t_scores"], d[f"t_{sig}"], d["t_cold"], k), d["t_rel"], d["t_mask"])
            c = ndcg(at_cosine_rank(d["t_scores"][ci], d[f"t_{sig}"][ci], d["t_cold"][ci], k), d["t_rel"][ci],
                     d["crel_mask"][ci])
            add(sig, f"rank<={k}", None, [0.0], [v], [t], [c], None, k)
    grid = report["grid"]
    val_all = np.array([g["validation_all"] for g in grid])
    val_cold = np.array([g["validation_cold"] for g in grid])
    shipped = max(np.flatnonzero(val_all >= 0.98 * val_all.max()), key=lambda i: (val_cold[i], val_all[i]))
    reach = np.flatnonzero(val_cold >= report["mean_vector"]["validation_cold"])
    cheapest = max(reach, key=lambda i: val_all[i]) if len(reach) else None
    report["chosen"] = {"shipped_rule": grid[shipped], "mean_vector_rule": grid[cheapest] if cheapest is not None
                        else None}
    for g in grid:
        a, s = g["all_vs_unslotted"], g["slice_vs_mean_vector"]
        print(f"  {g['signal']:5s} gate q{g['gate_quantile']:<4} share {g['share']:<4}: val {g['validation_all']:.4f}"
              f" / {g['validation_cold']:.4f}  test {g['test_all']:.4f} ({a['mean']:+.4f} {a['low']:+.4f}.."
              f"{a['high']:+.4f})  slice {g['test_slice']:.4f} (vs mean {s['mean']:+.4f} {s['low']:+.4f}.."
              f"{s['high']:+.4f})")
    for rule, g in report["chosen"].items():
        print(f"chosen by {rule}: " + ("none reaches the mean vector on validation" if g is None else
                                       f"{g['signal']} gate q{g['gate_quantile']} share {g['share']}"))
    Path(out_path).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:6])
