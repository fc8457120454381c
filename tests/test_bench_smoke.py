"""`appliance bench NAME` at tiny sizes: each runs end to end and writes JSON with the expected keys and sane values.

The benchmarks that serve a shop (feed, ingest, memory) run as `python -m web.cli bench ...` subprocesses launched
together at the start of the module (each server start-up costs seconds of imports; in parallel they overlap).
No assertion is about a timing target.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO

import pytest

from appliance.config import load_config
from appliance.encoder import Encoder
from storage.vectors import VectorIndex
from web.bench import add_bench_parser, encoding, product_import
from web.bench.synth import Shop, build_shop

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "feed": ["--sizes", "500", "--customers", "50", "--events", "1000", "--concurrency", "2", "--duration", "1",
             "--warmup", "5"],
    "serve": ["--products", "500", "--customers", "50", "--events", "1000", "--concurrency", "2", "--duration", "1",
              "--events-per-second", "20", "--edits-per-second", "2", "--rate", "40", "--ab-rounds", "1"],
    "loop": ["--products", "500", "--customers", "50", "--events", "1000", "--connections", "2", "--duration", "1",
             "--events-per-second", "20", "--edits-per-second", "2"],
    "ingest": ["--products", "500", "--customers", "50", "--events", "1000", "--duration", "1", "--fresh-samples",
               "5", "--drain-seconds", "1", "--concurrency", "2", "--batches", "1,100"],
    "memory": ["--products", "300,600", "--customers", "50,150", "--events", "500", "--settle", "0.1"],
    "ann": ["--vectors", "2000", "--queries", "40", "--ef", "16,64,128"],
    "save": ["--vectors", "2000", "--rounds", "1"],
    "compact": ["--vectors", "2000", "--rounds", "1"],
    "widgets": ["--products", "500", "--customers", "50", "--events", "1000", "--concurrency", "2", "--duration", "1",
                "--warmup", "1", "--events-per-second", "20", "--edits-per-second", "2", "--distinct", "200",
                "--in-process-rounds", "20"],
    "impressions": ["--size", "500", "--customers", "50", "--events", "1000", "--concurrency", "1", "--duration",
                    "1", "--warmup", "5", "--rounds", "2"],
}
# Run alone after the others (it serves two shops at once): not in the parallel launch.
ACCESS = ["--products", "500", "--customers", "50", "--events", "1000", "--concurrency", "2", "--duration", "1",
          "--warmup", "5", "--slices", "1", "--keys", "3"]


def _launch(cmd: list[str], log: IO[str]) -> subprocess.Popen:
    """A bench in its own process group: the servers it starts go with it when it is killed."""
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):  # the group ended meanwhile
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[subprocess.Popen, Path]]]:
    root = tmp_path_factory.mktemp("bench")
    procs = {}
    for name, extra in TINY.items():
        out = root / name
        cmd = [sys.executable, "-m", "web.cli", "bench", name, *extra, "--out", str(out),
               "--work-dir", str(root / "work" / name)]
        log = (root / f"{name}.log").open("w")
        procs[name] = (_launch(cmd, log), out)
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            _kill(proc)


def _result(launched: dict, name: str) -> dict:
    proc, out = launched[name]
    try:
        code = proc.wait(timeout=300)  # several benchmarks at once on a shared machine
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise
    log = (out.parent / f"{name}.log").read_text()
    assert code == 0, log[-3000:]
    data = json.loads((out / f"{name}.json").read_text())
    assert data["benchmark"] == name
    assert data["command"].startswith(f"appliance bench {name}")
    machine = data["machine"]
    assert machine["cores"] >= 1 and machine["ram_gib"] > 0
    assert {"python", "torch", "hnswlib", "duckdb", "date"} <= set(machine)
    return data


def _ordered(p: dict) -> None:
    assert p["count"] > 0
    assert 0 <= p["p50"] <= p["p90"] <= p["p99"] <= p["max"]


def test_feed(launched: dict) -> None:
    data = _result(launched, "feed")
    (size,) = data["sizes"]
    assert size["products"] == 500 and size["rss_mib_after_warmup"] > 0
    runs = {r["kind"]: r for r in size["runs"]}
    assert set(runs) == {"personal", "popular"}
    for kind, run in runs.items():
        assert run["ok"] > 0 and run["rps"] > 0 and run["errors"] == 0
        _ordered(run["latency_ms"])
        # personal feeds come from customers with a vector; popular ones from customers without
        assert run["personalized"] == (run["ok"] if kind == "personal" else 0)
    assert data["checks"]


def test_widgets(launched: dict) -> None:
    data = _result(launched, "widgets")
    assert data["shop"]["products"] == 500 and data["tables_build_ms"] > 0
    kinds = {"health", "bought-together", "cart", "related", "similar", "trending", "recently-viewed", "page"}
    runs = {(r["phase"], r["kind"]): r for r in data["closed_loop"]}
    assert set(runs) == {(p, k) for p in ("quiet", "writes") for k in kinds}
    for run in runs.values():
        assert run["connections"] == 2 and run["requests"] > 0 and run["rps"] > 0 and run["non_2xx"] == 0, run
        assert 0 <= run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]
        assert run["server_cpu_ms_per_request"] > 0
    # the traffic repeats products (drawn from the shop's events) but is not a handful of requests
    assert data["distinct_requests"]["health"] == 1 and data["distinct_requests"]["trending"] == 1
    assert 20 < data["distinct_requests"]["related"] <= 200
    assert set(data["writes"]) == {"consumer", "events", "edits"}
    assert data["writes"]["consumer"]["processed_per_s"] > 0 and data["writes"]["consumer"]["mean_lag_s"] >= 0
    assert set(data["writes"]["events"]["statuses"]) == {"202"} and set(data["writes"]["edits"]["statuses"]) == {"200"}
    timed = data["in_process_ms_per_answer"]
    assert set(timed) == kinds - {"health"} and all(ms > 0 for ms in timed.values())


def test_impressions(launched: dict) -> None:
    data = _result(launched, "impressions")
    assert {(r["impressions"], r["kind"]) for r in data["runs"]} == {
        (mode, kind) for mode in ("off", "on") for kind in ("personal", "popular")}
    for run in data["runs"]:
        assert run["ok"] > 0 and run["errors"] == 0
    counts = data["impression_counts"]
    served = sum(r["ok"] for r in data["runs"] if r["impressions"] == "on")
    assert counts["dropped"] == 0 and counts["written"] + counts["buffered"] >= served * 20  # warm-up adds more
    for row in data["summary"]:
        assert row["rps_off"] > 0 and row["rps_on"] > 0 and row["ratio"] > 0
    cost = data["cpu_cost"]
    assert cost["items_per_answer"] == 20 and cost["served_us"] > 0 and cost["flush_us"] > 0


def test_serve(launched: dict) -> None:
    data = _result(launched, "serve")
    runs = {(r["phase"], r["kind"]): r for r in data["closed_loop"]}
    assert set(runs) == {(p, k) for p in ("quiet", "writes") for k in ("health", "personal", "popular")}
    for run in runs.values():
        assert run["connections"] == 2 and run["requests"] > 0 and run["rps"] > 0 and run["non_2xx"] == 0
        assert 0 <= run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]
        assert run["server_cpu_ms_per_request"] > 0
    for run in data["open_loop"]:
        assert run["offered_rps"] == 40 and run["ok"] > 0 and run["errors"] == 0
        _ordered(run["latency_from_due_ms"])
    assert set(data["writes"]) == {"consumer", "events", "edits"}
    assert data["writes"]["consumer"]["processed_per_s"] > 0 and data["writes"]["consumer"]["mean_lag_s"] >= 0
    assert set(data["writes"]["events"]["statuses"]) == {"202"}
    assert set(data["writes"]["edits"]["statuses"]) == {"200"}
    assert data["checks"]
    ab = data["edits_ab"]  # target 2: the edits stream off and on, events streaming in both
    arms = ("without edits", "with edits")
    kinds = ("health", "personal", "popular")
    assert {(r["arm"], r["kind"]) for r in ab["closed_loop"]} == {(a, k) for a in arms for k in kinds}
    assert {(r["arm"], r["kind"]) for r in ab["open_loop"]} == {(a, k) for a in arms for k in ("personal", "popular")}
    assert all(r["connections"] == 8 and r["non_2xx"] == 0 for r in ab["closed_loop"])
    assert len(ab["pairs"]) == 5 and all(p["median_without"] > 0 and p["median_with"] > 0 for p in ab["pairs"])
    assert set(ab["events"]["statuses"]) == {"202"} and set(ab["edits"][0]["statuses"]) == {"200"}
    assert any(line.startswith("  target 2 ") for line in data["checks"])
    startup = data["startup"]
    assert 0 < startup["ready_seconds"] <= startup["warmed_seconds"]
    assert startup["rss_mib_ready"] > 0 and startup["rss_mib_warmed"] > 0


def test_a_shop_cut_short_during_its_indexes_resumes_there(tmp_path: Path) -> None:
    shop = Shop(300, 20, 200)
    path = build_shop(tmp_path, shop, log=lambda _: None)
    facts = json.loads((path / "shop.json").read_text())
    assert facts["build_seconds"] == pytest.approx(facts["store_seconds"] + facts["index_seconds"], abs=0.11)
    for name in ("shop.json", "products.hnsw", "products.hnsw.json", "users.hnsw", "users.hnsw.json"):
        (path / name).unlink()  # as if stopped while building the indexes
    stored = (path / "stored.json").read_text()
    lines: list[str] = []
    assert build_shop(tmp_path, shop, log=lines.append) == path
    assert (path / "stored.json").read_text() == stored and not any("products stored" in line for line in lines)
    config = load_config()
    index = VectorIndex(path / "products.hnsw", config.encoder.dim, config.index)
    assert index.load() is None and len(index) == 300
    assert json.loads((path / "shop.json").read_text())["built_at"] == facts["built_at"]


def test_loop(launched: dict) -> None:
    data = _result(launched, "loop")
    windows = {w["window"]: w for w in data["windows"]}
    assert list(windows) == ["quiet personal", "quiet popular", "writes personal", "writes popular", "writes alone"]
    for name, window in windows.items():
        probe = window["probe"]
        assert probe["callbacks"] > 0 and probe["loop_callback_cpu_s"] > 0 and probe["block_cpu_ms"] == 2.0
        assert probe["thread_cpu_s"]["MainThread"] >= 0 and probe["blocks_per_10s"] >= probe["blocks_over_10ms_per_10s"]
        assert all(c["blocks"] >= c["over_10ms"] and c["cpu_ms"] >= 2.0 * c["blocks"] for c in probe["causes"])
        assert all(key.startswith("gen") and s["passes"] > 0 for key, s in probe["gc"].items())
        if name != "writes alone":
            assert window["requests"] > 0 and window["non_2xx"] == 0 and window["rps"] > 0
    assert windows["writes alone"]["server_cpu_ms_per_acked_event"] > 0
    assert set(data["writes"]["events"]["statuses"]) == {"202"}


def test_ingest(launched: dict) -> None:
    data = _result(launched, "ingest")
    fresh = data["freshness"]
    _ordered(fresh["event_to_fresh_feed_ms"])
    assert fresh["timed_out"] == 0
    assert [r["batch"] for r in data["throughput"]] == [1, 100]
    for run in data["throughput"]:
        assert run["accepted_requests"] > 0 and run["events_per_s"] > 0
        assert set(run["statuses"]) == {"202"}
        _ordered(run["latency_ms"])
        assert run["drain"]["backlog_before"] >= run["drain"]["backlog_after"] >= 0


def test_memory(launched: dict) -> None:
    data = _result(launched, "memory")
    assert len(data["shops"]) == 3
    for shop in data["shops"]:
        assert shop["rss_ready_mib"] > 100 and shop["rss_after_feeds_mib"] > 100
        assert shop["disk_mib"]["appliance.duckdb"] > 0
    assert set(data["per_100k"]) == {
        "products_rss_ready_mib_per_100k", "products_rss_after_feeds_mib_per_100k",
        "customers_rss_ready_mib_per_100k", "customers_rss_after_feeds_mib_per_100k",
    }


def test_ann(launched: dict) -> None:
    data = _result(launched, "ann")
    assert data["vectors"] == 2000 and data["queries"] == 40 and data["structure_check_ms"] > 0
    assert {(s["ef"], s["k"]) for s in data["sweep"]} == {(e, k) for e in (16, 64, 128) for k in (10, 100)}
    for sweep in data["sweep"]:
        assert 0.0 <= sweep[f"recall@{sweep['k']}"] <= 1.0
        assert sweep["effective_ef"] == max(sweep["ef"], sweep["k"])
        _ordered(sweep["latency_ms"])
    # recall grows with ef (same queries, same graph)
    at100 = [s["recall@100"] for s in sorted(data["sweep"], key=lambda s: s["ef"]) if s["k"] == 100]
    assert at100 == sorted(at100)
    for brute in data["brute_force"]:
        _ordered(brute["per_query_ms"])
        assert brute["batched_per_query_ms"] > 0


def test_save(launched: dict) -> None:
    data = _result(launched, "save")
    (size,) = data["sizes"]
    assert size["vectors"] == 2000 and size["file_mib"] > 0 and size["getstate_ms"] > 0
    assert set(size["runs"]) == {"none", "hnswlib save_index", "VectorIndex.save", "VectorIndex.save, log",
                                 "VectorIndex.save, fold"}
    for runs in size["runs"].values():
        (run,) = runs
        assert run["seconds"] >= 0 and run["longest_gap_ms"] > 0 and run["queries_answered"] >= 0


def test_compact(launched: dict) -> None:
    data = _result(launched, "compact")
    (size,) = data["sizes"]
    assert size["vectors"] == 2000 and data["deleted"] == 0.11
    assert set(size["runs"]) == {"none", "in place (before)", "aside (IndexMirror.compact)"}
    (before,), (aside,) = size["runs"]["in place (before)"], size["runs"]["aside (IndexMirror.compact)"]
    assert before["vectors"] == 2000 - 220 and aside["vectors"] == 1780 - 195  # each after its own deletions
    for (run,) in size["runs"].values():
        assert run["seconds"] >= 0 and run["longest_gap_ms"] > 0 and run["queries_answered"] >= 0


def test_access(launched: dict, tmp_path: Path) -> None:
    for proc, _ in launched.values():  # the parallel ones first: this one adds two servers of its own
        proc.wait(timeout=300)
    log = (tmp_path / "access.log").open("w")
    cmd = [sys.executable, "-m", "web.cli", "bench", "access", *ACCESS, "--out", str(tmp_path / "access"),
           "--work-dir", str(tmp_path / "work")]
    proc = _launch(cmd, log)
    data = _result({"access": (proc, tmp_path / "access")}, "access")
    assert [r["mode"] for r in data["runs"]] == ["loopback", "keyed"] and data["keys_per_scope"] == 3
    for run in data["runs"]:
        assert run["ok"] > 0 and run["rps"] > 0 and set(run["statuses"]) == {"200"}
        _ordered(run["latency_ms"])
    assert data["ratio"] == pytest.approx(data["runs"][1]["rps"] / data["runs"][0]["rps"], rel=1e-2)
    assert set(data["guard_us"]) == {"keyed", "loopback", "no_guard"}


def test_encoding(encoder: Encoder, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "encoding", "--lines", "40", "--batch-sizes", "16", "--singles", "5",
                              "--out", str(tmp_path)])
    assert encoding.run(args, encoder=encoder) == 0
    data = json.loads((tmp_path / "encoding.json").read_text())
    assert data["lines"] == 40 and data["torch_threads"] >= 1
    assert {b["batch_size"] for b in data["batches"]} == {16, encoder.batch_size}
    assert all(b["products_per_s"] > 0 for b in data["batches"])
    _ordered(data["single_line_ms"])
    assert " | " in data["example_line"]


def test_import_products(encoder: Encoder, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "import-products", "--sizes", "60", "--sample", "20", "--http",
                              "--out", str(tmp_path)])
    assert product_import.run(args, encoder=encoder) == 0
    result = json.loads((tmp_path / "import-products.json").read_text())["results"][0]
    assert result["products"] == 60 and result["sample"] == 20
    assert "60 new" in result["first"]["summary"] and "embedded 60 lines" in result["first"]["summary"]
    assert "60 unchanged" in result["again"]["summary"] and "embedded 0 lines" in result["again"]["summary"]
    # the import's vectors are the encoder's, by either path
    assert result["cosine_to_encoder_min_cli"] > 0.9999 and result["cosine_to_encoder_min_http"] > 0.9999
    assert result["first"]["peak_rss_mib"] > 100 and result["encoder_products_per_s"] > 0
    http = result["http"]
    assert http["products_per_s"] > 0 and http["indexed_seconds"] >= http["posted_seconds"]
    assert http["peak_rss_mib"] > 100 and http["server_cpu_seconds"] > 0
    for phase in ("latency_ms_idle", "latency_ms_during"):  # the probe's requests all answered 200 (201)
        assert set(http[phase]) == {"GET /health/live", "GET /customers/probe-shopper/feed",
                                    "PUT /products/probe-product"}
        assert all(p["count"] >= 1 and p["max"] > 0 for p in http[phase].values())


def test_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_TRAINING__EPOCHS", "1")
    monkeypatch.setenv("APPLIANCE_TRAINING__MIN_NETWORK_STEPS", "0")  # one epoch a phase: the small-shop plan off
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "train", "--datasets", "shop-3k", "--shop-products", "300", "--recipes",
                              "before,after", "--out", str(tmp_path)])
    assert args.run(args) == 0
    data = json.loads((tmp_path / "train_shop-3k.json").read_text())
    shop = data["datasets"]["shop-3k"]
    assert shop["products"] == 300 and shop["events"] == 3000
    before, after = shop["recipes"]["before"], shop["recipes"]["after"]
    assert before["training"]["negatives"] == "full" and before["training"]["precision"] == "float32"
    assert after["training"]["negatives"] == "shared" and after["training"]["epochs"] == 1
    for r in (before, after):
        assert r["cpu_seconds"] > 0 and r["wall_seconds"] > 0 and r["examples"] > 0
        assert 0.0 <= r["ndcg@10"] <= 1.0 and r["epochs"] == 2


def test_import(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "import", "--events", "3k", "--out", str(tmp_path)])
    assert args.run(args) == 0
    data = json.loads((tmp_path / "import.json").read_text())
    assert set(data["histories"]) == {"demo", "synthetic 3k"}
    for history in data["histories"].values():
        first, again = history["append_new first"], history["append_new again"]
        assert history["append"]["stored"] == history["rows"] >= first["stored"] > 0 and again["stored"] == 0
        assert all(history[k]["rows_per_s"] > 0 for k in ("append", "append_new first", "append_new again"))
        # with an event_id each, every row is new the first time (ids, not contents) and none the second
        assert history["event_id first"]["stored"] == history["rows"] and history["event_id again"]["stored"] == 0
