"""Index saves over real hnswlib files: the whole write is hnswlib's own file, the saves between whole writes go
to a log that loading replays, a process killed at any step leaves a loadable index, and a server answers while
a save is under way."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from appliance.config import load_config
from appliance.text import product_text, text_hash
from jobs.indexing import CatalogIndexer
from storage import vector_files as vectors_module
from storage.catalog import CatalogStore
from storage.db import Database
from storage.hnsw_file import write_state
from storage.vectors import VectorIndex
from tests.helpers import product, small_catalog, wait_until
from web.app import create_app

DIM = 8
T0 = datetime(2026, 3, 1)
REPO = Path(__file__).resolve().parents[1]


def _index(path: Path, n: int = 0, seed: int = 1) -> tuple[VectorIndex, np.ndarray]:
    index = VectorIndex(path, DIM, load_config().index)
    vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    if n:
        index.upsert(np.arange(1, n + 1), vectors)
    return index, vectors


def _same(a: VectorIndex, b: VectorIndex) -> None:
    ids = np.sort(a.ids())
    assert np.array_equal(ids, np.sort(b.ids())) and a.deleted == b.deleted and a.synced_until == b.synced_until
    np.testing.assert_allclose(a.get(ids), b.get(ids), atol=1e-6)


def _loaded(path: Path) -> VectorIndex:
    index = VectorIndex(path, DIM, load_config().index)
    assert index.load() is None
    return index


@pytest.mark.parametrize("n", [0, 1, 3000])  # 3,000 elements: ~190 of them with upper levels
def test_a_whole_save_writes_hnswlib_s_own_file_byte_for_byte(tmp_path, n) -> None:
    index, _ = _index(tmp_path / "p.hnsw", n)
    index.remove(np.array([1, 5, n]))  # deleted marks travel in the level-0 records
    index._index.save_index(str(tmp_path / "hnswlib.hnsw"))
    size, sha = write_state(tmp_path / "ours.hnsw", index._index.__getstate__()[0])
    ours = (tmp_path / "ours.hnsw").read_bytes()
    assert ours == (tmp_path / "hnswlib.hnsw").read_bytes() and size == len(ours)
    index.save(whole=True)
    assert json.loads((tmp_path / "p.hnsw.json").read_text())["sha256"] == sha
    _same(index, _loaded(tmp_path / "p.hnsw"))


def test_saves_between_whole_writes_append_to_the_log_and_loading_replays_it(tmp_path) -> None:
    path = tmp_path / "p.hnsw"
    index, vectors = _index(path, 300)
    index.synced_until = T0
    index.save()  # nothing on disk yet: written whole
    written = path.stat().st_mtime_ns, path.stat().st_ino
    rng = np.random.default_rng(2)
    index.upsert(np.array([5, 301]), rng.normal(size=(2, DIM)).astype(np.float32))  # a changed vector, a new one
    index.remove(np.array([7, 8]))
    index.synced_until = T0 + timedelta(hours=1)
    index.save()
    index.remove(np.array([301]))
    index.upsert(np.array([7]), vectors[6:7])  # revived
    index.synced_until = T0 + timedelta(hours=2)
    assert index.save_if_dirty() and not index.save_if_dirty()
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == written and index.log_path.exists()
    again = _loaded(path)
    _same(index, again)
    assert 8 not in again.ids() and 301 not in again.ids() and again.query(vectors[6], 1)[0][0] == 7
    assert index.save_if_dirty(whole=True)  # shutdown's: the log folded into the file
    assert not index.log_path.exists() and path.stat().st_ino != written[1]
    _same(index, _loaded(path))


def test_a_change_made_while_the_file_is_written_goes_to_the_next_save(tmp_path, monkeypatch) -> None:
    index, _ = _index(tmp_path / "p.hnsw", 100)
    real = vectors_module.write_state

    def writing(path: Path, state: dict) -> tuple[int, str]:  # another thread's change, made mid-write
        index.upsert(np.array([101]), np.ones((1, DIM), np.float32))
        return real(path, state)

    monkeypatch.setattr(vectors_module, "write_state", writing)
    index.save()  # the first save: whole
    monkeypatch.setattr(vectors_module, "write_state", real)
    assert 101 not in _loaded(tmp_path / "p.hnsw").ids()
    assert index.save_if_dirty() and index.log_path.exists()  # the change, appended to the new file's log
    _same(index, _loaded(tmp_path / "p.hnsw"))


def _past_its_share(tmp_path: Path, monkeypatch) -> tuple[VectorIndex, tuple[int, int]]:
    """An index on disk whose log holds 10 labels, with 30 more changed: past max(LOG_MIN 20, 10 % of 340)."""
    monkeypatch.setattr(vectors_module, "LOG_MIN", 20)
    monkeypatch.setattr(vectors_module, "LOG_SHARE", 0.1)
    index, _ = _index(tmp_path / "p.hnsw", 300)
    index.save()
    index.upsert(np.arange(301, 311), np.ones((10, DIM), np.float32))
    index.save()
    assert index.log_path.exists()
    index.upsert(np.arange(311, 341), np.random.default_rng(4).normal(size=(30, DIM)).astype(np.float32))
    return index, (index.path.stat().st_ino, index.path.stat().st_size)


def test_a_log_past_its_share_is_folded_into_the_file_by_another_process(tmp_path, monkeypatch) -> None:
    index, before = _past_its_share(tmp_path, monkeypatch)
    monkeypatch.setattr(vectors_module, "write_state", None)  # a whole write in this process would fail
    index.save()
    assert not index.log_path.exists() and not Path(f"{index.path}.fold").exists()
    assert (index.path.stat().st_ino, index.path.stat().st_size) != before
    folded = _loaded(index.path)
    _same(index, folded)
    index.upsert(np.array([341]), np.ones((1, DIM), np.float32))
    index.save()  # the next log follows the folded file
    assert index.log_path.exists() and 341 in _loaded(index.path).ids()


def test_a_fold_that_fails_writes_the_file_whole_here(tmp_path, monkeypatch) -> None:
    index, before = _past_its_share(tmp_path, monkeypatch)
    Path(f"{index.path}.json").write_text("{}")  # the other process cannot load the file
    index.save()
    assert not index.log_path.exists() and index.path.stat().st_ino != before[0]
    _same(index, _loaded(index.path))


def test_a_log_that_follows_another_file_or_ends_torn(tmp_path) -> None:
    path = tmp_path / "p.hnsw"
    index, _ = _index(path, 100)
    index.save()
    index.upsert(np.array([101]), np.ones((1, DIM), np.float32))
    index.synced_until = T0
    index.save()
    good = index.log_path.read_bytes()
    index.upsert(np.array([102]), np.ones((1, DIM), np.float32))
    index.synced_until = T0 + timedelta(hours=1)
    index.save()
    full = index.log_path.read_bytes()
    index.log_path.write_bytes(full[:len(good) + (len(full) - len(good)) // 2])  # the last record cut in half
    torn = _loaded(path)
    assert 101 in torn.ids() and 102 not in torn.ids() and torn.synced_until == T0  # 102 is newer: synced again
    assert index.log_path.read_bytes() == good  # cut back to its good part: the next record follows it
    index.save(whole=True)
    index.log_path.write_bytes(good)  # a log left from before the whole write: it follows the old file
    stale = _loaded(path)
    assert 102 in stale.ids() and not index.log_path.exists()


KILLED = textwrap.dedent("""
    import os, sys
    import numpy as np
    from pathlib import Path
    from appliance.config import load_config
    from storage import hnsw_file, hnsw_log, vector_files, vectors
    index = vectors.VectorIndex(Path(sys.argv[1]), 8, load_config().index)
    assert index.load() is None
    index.upsert(np.arange(1, 41), np.random.default_rng(9).normal(size=(40, 8)).astype(np.float32))
    step = sys.argv[2]
    if step == "writing":  # dies at the third chunk of the new file
        hnsw_file.WRITE_CHUNK = 4096
        real_sha = hnsw_file.hashlib.sha256
        class Dying:
            def __init__(self):
                self.sha, self.calls = real_sha(), 0
            def update(self, chunk):
                self.calls += 1
                if self.calls == 3:
                    os._exit(9)
                self.sha.update(chunk)
        hnsw_file.hashlib = type("H", (), {"sha256": Dying})
    elif step == "between renames":
        real_replace = vector_files.os.replace
        def replace(src, dst):
            if str(dst).endswith(".json"):
                os._exit(9)
            real_replace(src, dst)
        vector_files.os.replace = replace
    else:  # appending: dies once the record is written, before it is synced
        hnsw_log.os.fsync = lambda fd: os._exit(9)
    index.save(whole=step != "appending")
""")


@pytest.mark.parametrize(("step", "kept"), [("writing", "before"), ("between renames", "new"), ("appending", "new")])
def test_a_process_killed_during_a_save_leaves_a_loadable_index(tmp_path, step, kept) -> None:
    path = tmp_path / "p.hnsw"
    before, _ = _index(path, 200)
    before.save()
    killed = subprocess.run([sys.executable, "-c", KILLED, str(path), step], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    after = _loaded(path)
    assert sorted(after.ids().tolist()) == list(range(1, 201))
    new = np.random.default_rng(9).normal(size=(40, DIM)).astype(np.float32)
    expected = before.get(np.arange(1, 41)) if kept == "before" else new / np.linalg.norm(new, axis=1)[:, None]
    np.testing.assert_allclose(after.get(np.arange(1, 41)), expected, atol=1e-6)
    np.testing.assert_allclose(after.get(np.arange(41, 201)), before.get(np.arange(41, 201)), atol=1e-6)


def _lines(products):
    texts = [product_text(p, (25.0, 100.0, 300.0)) for p in products]
    return texts, [text_hash("m", t) for t in texts]


def test_start_up_after_a_crash_syncs_what_came_after_the_last_save_instead_of_rebuilding(tmp_path, encoder):
    store = CatalogStore(Database(tmp_path / "a.duckdb"))
    first = [product(i, name) for i, name in enumerate(["Red wool scarf", "Blue running shoe", "Steel pan"], 1)]
    store.upsert(first, *_lines(first), T0)
    indexer = CatalogIndexer(store, encoder, VectorIndex(tmp_path / "p.hnsw", 384, load_config().index), 16)
    indexer.embed_pending()
    assert indexer.reconcile() == "rebuilt"  # no file yet
    later = [product(4, "Linen apron"), product(2, "Green hiking boot")]  # created and changed, never saved
    store.upsert(later, *_lines(later), T0 + timedelta(hours=1))
    indexer.embed_pending()
    indexer.sync_index()  # in memory only: the process dies here
    restarted = CatalogIndexer(store, encoder, VectorIndex(tmp_path / "p.hnsw", 384, load_config().index), 16)
    assert restarted.reconcile() == "loaded"
    assert restarted.index.ids().tolist() == store.vector_ids().tolist() == [1, 2, 3, 4]
    ids, stored, _ = store.vectors(None)
    held = restarted.index.get(ids)
    np.testing.assert_allclose(held, stored / np.linalg.norm(stored, axis=1, keepdims=True), atol=1e-5)


def test_a_server_answers_while_an_index_save_is_under_way(config, encoder, monkeypatch) -> None:
    """Requests made from inside a save (between its copy of the graph and its renames), a feed of similar
    products among them: the save holds neither the index lock nor the GIL while it writes."""
    from tests.browser import serve

    app = create_app(config, encoder=encoder)
    with serve(app) as base:
        services = app.state.services
        wait_until(services.ready.is_set, what="ready")

        def get(path: str) -> int:
            with urllib.request.urlopen(f"{base}{path}", timeout=30) as answer:
                return answer.status

        request = urllib.request.Request(f"{base}/products", data=json.dumps(small_catalog()).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        assert urllib.request.urlopen(request, timeout=30).status == 202
        wait_until(lambda: len(services.index) == len(small_catalog()), what="index sync")
        answered: list[int] = []
        real = vectors_module.write_state

        def writing(path: Path, state: dict) -> tuple[int, str]:
            answered.extend([get("/health/live"), get("/products/1/similar")])
            return real(path, state)

        monkeypatch.setattr(vectors_module, "write_state", writing)
        services.index.save(whole=True)
        assert answered == [200, 200]
        assert VectorIndex(services.index.path, 384, config.index).load() is None
