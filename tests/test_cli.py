"""The `appliance` command: import files, demo output, clear errors."""

import json
import subprocess
import sys

from storage.db import Database
from web.cli import main

PRODUCTS_CSV = """product_id,name,merchant,category_path,color,price,in_stock,created_at
1,Nike Air Max,Nike,Shoes > Sneakers > Running,Blue,150,true,2026-01-01T00:00:00Z
2,Steel Frying Pan,Tefal,Home & Kitchen > Cookware > Pans,Black,35.5,false,
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
    rows = db.read("SELECT product_id, category_path, in_stock, text FROM products ORDER BY 1")
    db.close()
    assert rows[0] == (1, ["Shoes", "Sneakers", "Running"], True,
                       "Nike Air Max | by Nike | Shoes | Sneakers | Running | Blue color | premium")
    assert rows[1][2] is False
    assert (data / "products.hnsw").exists()


def test_a_bad_row_names_its_line_and_nothing_is_imported(tmp_path, capsys) -> None:
    lines = [{"customer_id": 1, "product_id": 2, "event_name": "product_viewed"}] * 3
    lines.insert(2, {"customer_id": 1, "product_id": "two", "event_name": "product_viewed"})
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
    data = tmp_path / "data"
    assert main(["import", "events", str(out / "events.jsonl"), "--data-dir", str(data)]) == 0
    assert _count(data, "events") == len((out / "events.jsonl").read_text().splitlines())
