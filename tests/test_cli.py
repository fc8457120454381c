"""The `appliance` command: import files, demo output, clear errors."""

import json
import subprocess
import sys

from storage.db import Database
from web.cli import main

PRODUCTS_CSV = """product_id,name,merchant,category_path,color,price,in_stock,created_at
85123A,Nike Air Max,Nike,Shoes > Sneakers > Running,Blue,150,true,2026-01-01T00:00:00Z
22423,Steel Frying Pan,Tefal,Home & Kitchen > Cookware > Pans,Black,35.5,false,
"""
EVENTS_CSV = """customer_id,product_id,event_name,timestamp
17850,85123A,product_purchased,2026-01-02T10:00:00Z
anon-7f3a,22423,product_viewed,
"""


def _count(data_dir, table: str) -> int:
    db = Database(data_dir / "appliance.duckdb")
    try:
        return db.read(f"SELECT count(*) FROM {table}")[0][0]
    finally:
        db.close()


def test_import_products_csv_embeds_and_indexes(tmp_path, capsys) -> None:
    (tmp_path / "p.csv").write_text(PRODUCTS_CSV)
    data = tmp_path / "data"
    assert main(["import", "products", str(tmp_path / "p.csv"), "--data-dir", str(data)]) == 0
    assert "2 new" in capsys.readouterr().out
    db = Database(data / "appliance.duckdb")
    rows = db.read("""SELECT ext, category_path, in_stock, text FROM products JOIN product_ids ON product_id = key
                      ORDER BY product_id""")
    db.close()
    # the shop's StockCodes are its ids, in the order of the file; inside, dense keys
    assert rows[0] == ("85123A", ["Shoes", "Sneakers", "Running"], True,
                       "Nike Air Max | by Nike | Shoes | Sneakers | Running | Blue color | premium")
    assert rows[1][0] == "22423" and rows[1][2] is False
    assert (data / "products.hnsw").exists()


def test_import_products_in_chunks_stores_embeds_and_indexes_each(tmp_path, capsys) -> None:
    rows = [{"product_id": f"sku-{i}", "name": f"Trail Shoe {i}", "category_path": ["Shoes"]} for i in range(5)]
    rows.append({"product_id": "sku-5", "name": "Trail Shoe 0", "category_path": ["Shoes"]})  # sku-0's line
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "small.toml").write_text("[catalog]\nimport_chunk = 2\n")
    data = tmp_path / "data"
    run = ["import", "products", str(tmp_path / "p.jsonl"), "--data-dir", str(data),
           "--config", str(tmp_path / "small.toml")]
    assert main(run) == 0
    assert "6 new" in (out := capsys.readouterr().out) and "embedded 5 lines" in out  # sku-5 reuses sku-0's vector
    assert json.loads((data / "products.hnsw.json").read_text())["count"] == 6  # every chunk indexed, saved once
    db = Database(data / "appliance.duckdb")
    stamps = db.read("SELECT count(DISTINCT updated_at) FROM products")[0][0]
    db.close()
    assert stamps == 3  # one transaction per chunk of 2
    assert main(run) == 0
    assert "6 unchanged; embedded 0 lines" in capsys.readouterr().out


def test_a_bad_product_in_a_later_chunk_stores_nothing(tmp_path, capsys) -> None:
    rows = [{"product_id": f"sku-{i}", "name": f"Mug {i}"} for i in range(4)] + [{"product_id": "sku-1", "name": "Cup"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "small.toml").write_text("[catalog]\nimport_chunk = 2\n")
    data = tmp_path / "data"
    assert main(["import", "products", str(tmp_path / "p.jsonl"), "--data-dir", str(data),
                 "--config", str(tmp_path / "small.toml")]) == 2
    assert "p.jsonl:5: product_id sku-1 appears more than once" in capsys.readouterr().err
    assert not (data / "appliance.duckdb").exists() or _count(data, "products") == 0


def test_import_events_csv_with_the_shops_customer_and_product_ids(tmp_path) -> None:
    (tmp_path / "p.csv").write_text(PRODUCTS_CSV)
    (tmp_path / "e.csv").write_text(EVENTS_CSV)
    data = tmp_path / "data"
    assert main(["import", "products", str(tmp_path / "p.csv"), "--data-dir", str(data)]) == 0
    assert main(["import", "events", str(tmp_path / "e.csv"), "--data-dir", str(data)]) == 0
    db = Database(data / "appliance.duckdb")
    rows = db.read("""SELECT c.ext, p.ext, event_name FROM events
                      JOIN customer_ids c ON customer_id = c.key JOIN product_ids p ON product_id = p.key
                      ORDER BY event_id""")
    bought = db.read("SELECT product_ids FROM purchases JOIN customer_ids ON customer_id = key WHERE ext = '17850'")
    known = db.read("SELECT key FROM product_ids WHERE ext = '85123A'")[0][0]
    db.close()
    assert rows == [("17850", "85123A", "product_purchased"), ("anon-7f3a", "22423", "product_viewed")]
    assert bought == [([known],)]  # the feed's exclusion works on the same key


def test_a_bad_row_names_its_line_and_nothing_is_imported(tmp_path, capsys) -> None:
    lines = [{"customer_id": 1, "product_id": 2, "event_name": "product_viewed"}] * 3
    lines.insert(2, {"customer_id": 1, "product_id": 2.5, "event_name": "product_viewed"})
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    data = tmp_path / "data"
    assert main(["import", "events", str(path), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "e.jsonl:3" in err and "product_id" in err
    assert not (data / "appliance.duckdb").exists() or _count(data, "events") == 0
    del lines[2]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert main(["import", "events", str(path), "--data-dir", str(data)]) == 0
    assert _count(data, "events") == 3


def test_bad_csv_row_and_unknown_format(tmp_path, capsys) -> None:
    bad = PRODUCTS_CSV + "3,Mug,Acme,Home,White,cheap,true,\n"
    (tmp_path / "p.csv").write_text(bad)
    assert main(["import", "products", str(tmp_path / "p.csv"), "--data-dir", str(tmp_path / "d")]) == 2
    assert "p.csv:4" in capsys.readouterr().err
    (tmp_path / "p.xml").write_text("<x/>")
    assert main(["import", "products", str(tmp_path / "p.xml"), "--data-dir", str(tmp_path / "d")]) == 2
    assert "unknown format" in capsys.readouterr().err


def test_demo_writes_files_the_importer_reads(tmp_path) -> None:
    out = tmp_path / "demo"
    env_config = tmp_path / "small.toml"
    env_config.write_text("[demo]\nproducts = 50\ncustomers = 5\ndays = 2\n")
    done = subprocess.run([sys.executable, "-m", "web.cli", "demo", str(out), "--config", str(env_config)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len((out / "products.jsonl").read_text().splitlines()) == 50
    assert len(json.loads((out / "tastes.json").read_text())) == 5
    planted = json.loads((out / "planted.json").read_text())
    assert planted["partners"] and len(planted["burst"]) == 3
    data = tmp_path / "data"
    assert main(["import", "events", str(out / "events.jsonl"), "--data-dir", str(data)]) == 0
    assert _count(data, "events") == len((out / "events.jsonl").read_text().splitlines())


def test_training_outside_the_server_takes_the_offline_threads(tmp_path) -> None:
    from web.cli import _offline_config, _parser

    (tmp_path / "shop.toml").write_text("[training]\nthreads = 1\noffline_threads = 2\n")
    for command in (["train"], ["jobs", "run", "retrain"]):
        args = _parser().parse_args([*command, "--config", str(tmp_path / "shop.toml")])
        assert _offline_config(args).training.threads == 2
