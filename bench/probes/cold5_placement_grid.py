"""One-off analysis behind BENCHMARKS.md "Cold placement, fifth round": products without events re-scored as
scale * cosine + offset (cosine: the trained tower's, its text side's or the plain mean vector's), the pair chosen
on validation by appliance/prior.py's rule (within 2 % of the best overall NDCG@10, best on cold positives), on
all validation examples or on their most recent quarter; test NDCG@10 overall and on the cold slice, paired
against the same tower unplaced and against the round-4 mean vector. Reads the arrays `cold5_placement_arrays.py`
saves; run: python bench/probes/cold5_placement_grid.py DATASET ARRAYS.npz OUT.json (ranks ignore ties)."""

import json
import os
import sys
from pathlib import Path

import numpy as np

from appliance.evaluation import paired_difference

LOG = 1.0 / np.log2(np.arange(1, 11) + 1.0)
SCALES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
OFFSETS = np.round(np.arange(-6.0, 1.001, 0.02), 2)
SIGNALS = ("tower", "text", "mean")


class Placed:
    """NDCG@10 per row under the placement, from sorted known scores and sorted cold cosines (no re-ranking)."""

    def __init__(self, scores, signal, cold, relevant, mask):
        live = np.isfinite(scores)
        self.known = [np.sort(s[v & ~c]) for s, v, c in zip(scores, live, cold, strict=True)]
        self.new = [np.sort(g[v & c]) for g, v, c in zip(signal, live, cold, strict=True)]
        self.score, self.signal = np.take_along_axis(scores, relevant, 1), np.take_along_axis(signal, relevant, 1)
        self.cold, self.mask = np.take_along_axis(cold, relevant, 1), mask
        self.ideal = np.cumsum(LOG)[np.clip(mask.sum(1), 1, 10) - 1]

    def __call__(self, a, offsets):
        offsets = np.asarray(offsets, float)
        out = np.zeros((len(offsets), len(self.known)))
        for r, (known, new) in enumerate(zip(self.known, self.new, strict=True)):
            for j in np.flatnonzero(self.mask[r]):
                s, g = self.score[r, j], self.signal[r, j]
                if self.cold[r, j]:
                    placed = a * g + offsets
                    rank = 1 + len(known) - np.searchsorted(known, placed, "right") + len(new) - np.searchsorted(
                        new, g, "right")
                elif np.isfinite(s):
                    rank = 1 + len(known) - np.searchsorted(known, s, "right") + len(new) - np.searchsorted(
                        new, (s - offsets) / a, "right")
                else:
                    continue
                hit = rank <= 10
                out[hit, r] += LOG[rank[hit] - 1]
            out[:, r] /= self.ideal[r]
        return out


def main(name, arrays, out_path):
    d = np.load(arrays)
    val_cold, is_c, moment = d["vcoldpos"], d["is_c"], d["v_moment"]
    ci = np.flatnonzero(is_c)
    stored = json.loads(Path(f"bench/results/quality_{name}_round4.json").read_text())
    stored = stored["cold_start"]["evaluation"]["per_customer"]
    mean_vector = np.asarray(stored["mean_vector"])
    report = {"command": "python bench/probes/cold5_placement_grid.py " + " ".join(sys.argv[1:4]),
              "load_average": os.getloadavg(), "dataset": name, "validation": len(val_cold),
              "validation_cold": int(val_cold.sum()),
              "test": len(is_c), "test_cold": len(ci), "rules": []}
    base_all = base_cold = None
    for sig in SIGNALS:
        test = Placed(d["t_scores"], d[f"t_{sig}"], d["t_cold"], d["t_rel"], d["t_mask"])
        cold = Placed(d["t_scores"][ci], d[f"t_{sig}"][ci], d["t_cold"][ci], d["t_rel"][ci], d["crel_mask"][ci])
        if base_all is None:
            base_all, base_cold = test(1.0, [0.0])[0], cold(1.0, [0.0])[0]
            report["unplaced"] = {"all": base_all.mean(), "cold": base_cold.mean(), "mean_vector_cold":
                                  mean_vector.mean(), "unplaced_vs_stored_tower_no_slots_cold": float(np.abs(
                                      base_cold - np.asarray(stored.get("tower_no_slots", stored["tower"]))).max())}
        for part in ("all", "latest quarter"):
            keep = np.ones(len(moment), bool) if part == "all" else moment >= np.quantile(moment, 0.75)
            val = Placed(d["v_scores"][keep], d[f"v_{sig}"][keep], d["v_cold"][keep], d["v_rel"][keep],
                         np.ones_like(d["v_rel"][keep], bool))
            grid = [(a, b, row) for a in SCALES for b, row in zip(OFFSETS, val(a, OFFSETS), strict=True)]
            overall = np.array([row.mean() for _, _, row in grid])
            on_cold = np.array([row[val_cold[keep]].mean() if val_cold[keep].any() else 0.0 for _, _, row in grid])
            eligible = np.flatnonzero(overall >= overall.max() * 0.98)
            g = max(eligible, key=lambda i: (on_cold[i], overall[i], -abs(grid[i][1]), -abs(grid[i][0] - 1)))
            a, b = grid[g][:2]
            t, c = test(a, [b])[0], cold(a, [b])[0]
            report["rules"].append({
                "signal": sig, "validation": part, "scale": a, "offset": float(b),
                "validation_all": overall[g], "validation_cold": on_cold[g], "test_all": t.mean(),
                "test_cold": c.mean(), "all_vs_unplaced": paired_difference(t, base_all),
                "cold_vs_unplaced": paired_difference(c, base_cold),
                "cold_vs_mean_vector": paired_difference(c, mean_vector)})
            r = report["rules"][-1]
            print(f"{sig:5s} {part:14s} a {a} b {b:+.2f}: val {overall[g]:.4f}/{on_cold[g]:.4f} test {t.mean():.4f} "
                  f"({r['all_vs_unplaced']['mean']:+.4f} {r['all_vs_unplaced']['low']:+.4f}..."
                  f"{r['all_vs_unplaced']['high']:+.4f}) cold {c.mean():.4f} (vs mean vector "
                  f"{r['cold_vs_mean_vector']['mean']:+.4f} {r['cold_vs_mean_vector']['low']:+.4f}.."
                  f"{r['cold_vs_mean_vector']['high']:+.4f})")
    Path(out_path).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:4])
