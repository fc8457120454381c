"""`appliance bench serve`'s phase `edits-ab`: issue 15's target 2, "p99 with edits ≈ p99 without", in one run.

Events stream in throughout (`--events-per-second`); the product edits stream (`--edits-per-second`) is switched
off and on in turn, `--ab-rounds` times (A B A B: without, with), and in each arm every route is measured at 8
connections under `wrk` (the trivial route beside the feeds) and each feed under the open loop. The pair is read
per round (the machine's noise moves both arms of one round less than it moves rounds apart) and pooled.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from web.bench.common import Server, table

ARMS = ("without edits", "with edits")
CONNECTIONS = 8


def edits_ab(server: Server, script: Callable[[str], Path], args: argparse.Namespace, root: Path, products: int,
             customers: int) -> dict[str, Any]:
    """Alternate the arms; every closed- and open-loop row tagged with its arm and round, the streams' summaries."""
    from web.bench.serve import KINDS, Writes, _phase, open_loop  # serve calls this module: imported at call time

    events_only = argparse.Namespace(**{**vars(args), "edits_per_second": 0.0})
    edits_only = argparse.Namespace(**{**vars(args), "events_per_second": 0.0})
    closed: list[dict] = []
    opened: list[dict] = []
    edits: list[dict] = []
    with Writes(server, root, events_only, products, customers) as events:
        for round_ in range(1, args.ab_rounds + 1):
            for arm in ARMS:
                stream = Writes(server, root, edits_only, products, customers) if arm == "with edits" else None
                with stream or contextlib.nullcontext():
                    rows = _phase(server, script, KINDS, [CONNECTIONS], args.duration, f"r{round_} {arm}")
                    closed += [{**r, "phase": "edits-ab", "arm": arm, "round": round_} for r in rows]
                    for kind in ("personal", "popular"):
                        row = {**open_loop(server, kind, customers, args, root), "arm": arm, "round": round_}
                        opened.append(row)
                        print(f"  r{round_} {arm:13s} open loop {kind:8s} {row['achieved_rps']:,.0f}/"
                              f"{args.rate:,.0f} req/s  p99 {row['latency_from_due_ms']['p99']:.2f} ms", flush=True)
                if stream is not None:
                    edits.append({"round": round_, **stream.summary["edits"]})
    return {"connections": CONNECTIONS, "rounds": args.ab_rounds, "closed_loop": closed, "open_loop": opened,
            "events": events.summary["events"], "edits": edits, "pairs": pairs(closed, opened)}


def pairs(closed: list[dict], opened: list[dict]) -> list[dict]:
    """Per route and loop: p99 without and with edits, per round and as the median of the rounds, and their ratio."""
    out = []
    for loop, rows, p99 in (("closed", closed, lambda r: r["latency_ms"]["p99"]),
                            ("open", opened, lambda r: r["latency_from_due_ms"]["p99"])):
        for kind in dict.fromkeys(r["kind"] for r in rows):
            arms = {arm: [p99(r) for r in rows if r["kind"] == kind and r["arm"] == arm] for arm in ARMS}
            without, with_ = (_median(arms[a]) for a in ARMS)
            out.append({"loop": loop, "kind": kind, "p99_ms_without": arms[ARMS[0]], "p99_ms_with": arms[ARMS[1]],
                        "median_without": without, "median_with": with_,
                        "ratio": round(with_ / without, 3) if without else None})
    return out


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return round((xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2, 3) if xs else 0.0


def print_pairs(result: dict[str, Any]) -> None:
    rows = [(p["loop"], p["kind"], " / ".join(f"{x:.1f}" for x in p["p99_ms_without"]),
             " / ".join(f"{x:.1f}" for x in p["p99_ms_with"]), p["median_without"], p["median_with"],
             "-" if p["ratio"] is None else f"{p['ratio']:.2f}x") for p in result["pairs"]]
    print()
    print(table(f"target 2: p99 (ms) with the edits stream against without, events streaming in both, "
                f"{result['connections']} connections (closed) and the open loop, rounds alternated",
                ("loop", "route", "without, by round", "with, by round", "median without", "median with", "ratio"),
                rows))
    for e in result["edits"]:
        print(f"  round {e['round']} edits: {e['acked_per_s']:,.1f}/s acknowledged of {e['offered_per_s']:,.0f}/s, "
              f"p99 {e['latency_ms']['p99']:,.1f} ms")


def checks(result: dict[str, Any]) -> list[str]:
    """The feeds' ratio next to the trivial route's: edits that cost the machine raise health's p99 as well."""
    health = next((p["ratio"] for p in result["pairs"] if p["loop"] == "closed" and p["kind"] == "health"), None)
    lines = []
    for p in result["pairs"]:
        if p["kind"] == "health" or p["ratio"] is None:
            continue
        lines.append(f"  target 2 {p['loop']} loop {p['kind']}: p99 {p['median_without']:,.1f} ms without edits, "
                     f"{p['median_with']:,.1f} ms with ({p['ratio']:.2f}x; /health/live {health or 0:.2f}x)")
    return lines
