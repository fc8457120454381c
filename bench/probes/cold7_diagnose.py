"""One-off for BENCHMARKS.md "Cold-start, seventh round": at each cold target (a validation example whose positive
had no event before its moment; a test customer of the cold-start slice and each of its new products), where the
positive ranks among the products without events only, by the trained tower's cosine, its text side's (the
residual mean) and the plain mean vector's; and where it ranks in the whole list (the tower's cosine + prior, the
mean vector's cosine). Separates "the tower orders new products worse" from "no room for them in the list".
Reads cold5_placement_arrays.py's arrays; run: python bench/probes/cold7_diagnose.py DATASET ARRAYS.npz OUT.json"""

import json
import os
import sys
from pathlib import Path

import numpy as np

SIGNALS = ("tower", "text", "mean")


def rank_of(values, candidates, at):
    """1-based rank of column `at` among the `candidates` (bool row) by `values` (row), ties counted half."""
    v = values[at]
    above, tied = np.count_nonzero(candidates & (values > v)), np.count_nonzero(candidates & (values == v)) - 1
    return 1 + int(above) + int(tied) // 2


def targets(d, part):
    """(row, column, history length, newest age) of every cold target of the part."""
    if part == "validation":
        rows = np.flatnonzero(d["vcoldpos"])
        return [(r, int(d["v_rel"][r, 0]), int(d["v_len"][r]), float(d["v_age"][r])) for r in rows]
    out = []
    for r in np.flatnonzero(d["is_c"]):
        for j in np.flatnonzero(d["crel_mask"][r]):
            out.append((r, int(d["t_rel"][r, j]), int(d["t_len"][r]), float(d["t_age"][r])))
    return out


def summary(ranks):
    ranks = np.asarray(ranks, float)
    gain = np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0)
    return {"median": float(np.median(ranks)), "top1": float((ranks <= 1).mean()), "top3": float((ranks <= 3).mean()),
            "top10": float((ranks <= 10).mean()), "top50": float((ranks <= 50).mean()), "ndcg10": float(gain.mean())}


def main(name, arrays, out_path):
    d = np.load(arrays)
    report = {"command": "python bench/probes/cold7_diagnose.py " + " ".join(sys.argv[1:4]),
              "load_average": os.getloadavg(), "dataset": name, "parts": {}}
    for part, p in (("validation", "v"), ("test", "t")):
        scores = d[f"{p}_scores"]
        rows = targets(d, part)
        facts = {"targets": len(rows), "cold_candidates": [], "among_cold": {s: [] for s in SIGNALS},
                 "whole_list": {"tower_score": [], "mean": [], "text": []}, "length": [], "age_hours": []}
        for r, col, length, age in rows:
            live = np.isfinite(scores[r])
            cold = live & d[f"{p}_cold"][r]
            facts["cold_candidates"].append(int(cold.sum()))
            for s in SIGNALS:
                facts["among_cold"][s].append(rank_of(d[f"{p}_{s}"][r], cold, col))
            facts["whole_list"]["tower_score"].append(rank_of(scores[r], live, col))
            for s in ("mean", "text"):
                facts["whole_list"][s].append(rank_of(d[f"{p}_{s}"][r], live, col))
            facts["length"].append(length)
            facts["age_hours"].append(age)
        out = {"targets": len(rows), "cold_candidates_median": float(np.median(facts["cold_candidates"])),
               "among_cold": {s: summary(v) for s, v in facts["among_cold"].items()},
               "whole_list": {s: summary(v) for s, v in facts["whole_list"].items()},
               "per_target": facts}
        tower, mean = np.asarray(facts["among_cold"]["tower"]), np.asarray(facts["among_cold"]["mean"])
        out["tower_better_than_mean"] = float((tower < mean).mean())
        out["mean_better_than_tower"] = float((mean < tower).mean())
        # by the history's age (terciles): does the tower's cosine order new products worse for old histories?
        age = np.asarray(facts["age_hours"])
        edges = np.quantile(age, [1 / 3, 2 / 3]) if len(age) else [0, 0]
        out["by_age"] = []
        for lo, hi in zip([-np.inf, *edges], [*edges, np.inf], strict=True):
            keep = (age > lo) & (age <= hi)
            if keep.any():
                out["by_age"].append({"age_hours": [float(lo), float(hi)], "targets": int(keep.sum()), **{
                    s: summary(np.asarray(facts["among_cold"][s])[keep])["median"] for s in SIGNALS}})
        report["parts"][part] = out
        print(f"{name} {part}: {len(rows)} cold targets, median {out['cold_candidates_median']:.0f} cold candidates")
        for s in SIGNALS:
            m = out["among_cold"][s]
            print(f"  among cold by {s:5s}: median rank {m['median']:6.1f}  top1 {m['top1']:.3f} top3 {m['top3']:.3f} "
                  f"top10 {m['top10']:.3f} top50 {m['top50']:.3f}  cold-only NDCG@10 {m['ndcg10']:.4f}")
        for s, m in out["whole_list"].items():
            print(f"  whole list by {s:11s}: median rank {m['median']:7.1f}  top10 {m['top10']:.3f} "
                  f"top50 {m['top50']:.3f}  NDCG@10 {m['ndcg10']:.4f}")
        print(f"  tower ahead of mean vector among cold {out['tower_better_than_mean']:.3f}, behind "
              f"{out['mean_better_than_tower']:.3f}; by age tercile (median ranks tower/text/mean): "
              + "; ".join(f"{b['targets']}: {b['tower']:.0f}/{b['text']:.0f}/{b['mean']:.0f}" for b in out["by_age"]))
    Path(out_path).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:4])
