"""One-off for BENCHMARKS.md "Cold-start, eighth round": serve the text side for new products? The cold slots
(`ranking.cold_slots`) filled by a second user vector that ranks only the products without events (the tower's
text side, the plain mean vector, or the tower's cosine plus its text side's), each share chosen on validation
only by the shipped rule (`appliance.prior.pick_cold_share`, "room", no floor), against what ships (the slots by
the tower's cosine, chosen the same way). Test overall paired against the shipped choice and the unslotted tower,
the slice against the mean vector and the shipped choice. Also the validation cost of one slot at place 10 and
what explains it (the share of positives the unslotted tower puts at place 10 exactly, and per place over 6..15).
Reads cold5_placement_arrays.py's arrays; run with PYTHONPATH=.:bench/probes:
python bench/probes/cold8_text_slots.py DATASET ARRAYS.npz OUT.json [STORED.json] (STORED: a `bench quality` run on
the same split whose tower row the shipped choice must reproduce per customer)"""

import json
import os
import sys
from pathlib import Path

import numpy as np
from cold7_slots import ndcg, slotted

from appliance.evaluation import paired_difference
from appliance.prior import COLD_SHARES, pick_cold_share

SIGNALS = ("tower", "text", "mean", "tower+text")  # the first is what the feed serves today


def signal(d, part, name):
    """(R, N) the cosines that order the cold slots; "a+b" sums two of them."""
    return sum(d[f"{part}_{s}"] for s in name.split("+"))


def place_of_positive(scores, relevant):
    """(R,) 1-based place of each row's first positive in the unslotted list."""
    hit = np.take_along_axis(scores, relevant[:, :1], axis=1)
    return 1 + (scores > hit).sum(1)


def interval(x):
    return f"{x['mean']:+.4f} {x['low']:+.4f}..{x['high']:+.4f}"


def line(mark, label, g):
    """One grid point: validation all / cold, test all against what ships, the slice against it and the mean."""
    return (f" {mark}{label}: val {g['validation_all']:.4f} / {g['validation_cold']:.4f}  test {g['test_all']:.4f} "
            f"(vs shipped {interval(g['all_vs_shipped'])})  slice {g['test_slice']:.4f} (vs shipped "
            f"{interval(g['slice_vs_shipped'])}; vs mean {interval(g['slice_vs_mean_vector'])})")


def main(name, arrays, out_path, stored=None):
    d = np.load(arrays)
    vrel, vcold, ci = d["v_rel"], d["vcoldpos"], np.flatnonzero(d["is_c"])
    vmask = np.ones_like(vrel, bool)
    tlive = np.isfinite(d["t_scores"])
    mean_slice = ndcg(np.where(tlive, d["t_mean"], -np.inf)[ci], d["t_rel"][ci], d["crel_mask"][ci])
    base_all = ndcg(d["t_scores"], d["t_rel"], d["t_mask"])
    shares = COLD_SHARES
    rows = {}
    for sig in SIGNALS:
        vs = slotted(d["v_scores"], signal(d, "v", sig), d["v_cold"], shares)
        ts = slotted(d["t_scores"], signal(d, "t", sig), d["t_cold"], shares)
        cs = slotted(d["t_scores"][ci], signal(d, "t", sig)[ci], d["t_cold"][ci], shares)
        rows[sig] = (np.stack([ndcg(s, vrel, vmask) for s in vs]),
                     np.stack([ndcg(s, d["t_rel"], d["t_mask"]) for s in ts]),
                     np.stack([ndcg(s, d["t_rel"][ci], d["crel_mask"][ci]) for s in cs]))
    shipped = pick_cold_share(rows["tower"][0], vcold, shares, "room", 0.0)
    ship_all, ship_slice = rows["tower"][1][shipped], rows["tower"][2][shipped]
    report = {"command": "python bench/probes/cold8_text_slots.py " + " ".join(sys.argv[1:5]), "dataset": name,
              "load_average": os.getloadavg(), "mean_vector_slice": float(mean_slice.mean()),
              "unslotted_all": float(base_all.mean()), "shipped_share": shares[shipped],
              "validation_customers": len(vrel), "validation_cold": int(vcold.sum()), "test_customers": len(base_all),
              "slice_customers": len(ci), "signals": {}}
    if stored:  # the arrays' shipped choice against the stored run's tower row (the same training and split)
        same = np.asarray(json.loads(Path(stored).read_text())["evaluation"]["per_customer"]["tower"])
        report["shipped_vs_stored"] = {"file": stored, "max_difference": float(np.abs(ship_all - same).max())}
        print(f"shipped choice against {stored}'s tower: max per-customer difference "
              f"{report['shipped_vs_stored']['max_difference']}")
    for sig, (v, t, c) in rows.items():
        chosen = pick_cold_share(v, vcold, shares, "room", 0.0)
        per_share = [{"share": s, "validation_all": float(v[g].mean()), "validation_cold": float(v[g][vcold].mean()),
                      "test_all": float(t[g].mean()), "test_slice": float(c[g].mean()),
                      "all_vs_unslotted": paired_difference(t[g], base_all),
                      "all_vs_shipped": paired_difference(t[g], ship_all),
                      "slice_vs_mean_vector": paired_difference(c[g], mean_slice),
                      "slice_vs_shipped": paired_difference(c[g], ship_slice)} for g, s in enumerate(shares)]
        report["signals"][sig] = {"chosen_share": shares[chosen], "chosen": per_share[chosen], "shares": per_share}
    # why one slot at place 10 costs validation what it costs: the positives the unslotted list has there
    for part, scores, rel in (("validation", d["v_scores"], vrel), ("test", d["t_scores"], d["t_rel"])):
        place = place_of_positive(scores, rel)
        report[f"{part}_positive_at_place_10"] = float((place == 10).mean())
        report[f"{part}_positive_in_top_10"] = float((place <= 10).mean())
        report[f"{part}_positive_per_place_6_to_15"] = float(((place >= 6) & (place <= 15)).mean() / 10)
    print(f"{name}: unslotted test {base_all.mean():.4f}; mean vector slice {mean_slice.mean():.4f}; shipped share "
          f"{shares[shipped]}; positives at place 10: validation {report['validation_positive_at_place_10']:.4f}, "
          f"test {report['test_positive_at_place_10']:.4f}")
    for sig, r in report["signals"].items():
        for g in r["shares"]:
            print(line("*" if g["share"] == r["chosen_share"] else " ", f"{sig:10s} {g['share']:<4}", g))
    Path(out_path).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:5])
