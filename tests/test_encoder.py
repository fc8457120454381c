"""The encoder: batch by batch it gives sentence-transformers' own vectors, in the order asked, without importing
sentence-transformers for the packaged model (other folders load through it); turns are fair."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from appliance import minilm
from appliance.encoder import Encoder, Turns, model_path
from tests.helpers import wait_until

LINES = [
    "Nike Air Zoom Pegasus running shoe, blue, mid-range",
    "Sony WH-1000XM5",
    "Le Creuset cast iron casserole in volcanic orange, 26 cm, premium cookware for slow cooking and braising",
    "Tefal pan",
    "Levi's 501 Original Jeans, Clothing > Bottoms > Jeans, blue, mid-range",
    "Lego Star Wars Millennium Falcon building set with minifigures",
    "Philips Sonicare electric toothbrush",
]


@pytest.fixture(scope="module")
def sentence_transformer(encoder: Encoder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_path(encoder.model)), device="cpu")


def _reference(st, lines: list[str]) -> np.ndarray:
    return st.encode(lines, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def test_vectors_are_sentence_transformers_own_in_the_order_asked(encoder: Encoder, sentence_transformer) -> None:
    assert isinstance(encoder._model, minilm.MiniLM)  # the packaged model is read without sentence-transformers
    small = Encoder(encoder.model, encoder.dim, batch_size=2)  # several batches of two
    small._model = encoder._model  # the loaded model, shared
    lines = LINES * 3
    got = small.encode(lines)
    want = _reference(sentence_transformer, lines)
    assert got.shape == (len(lines), encoder.dim) and got.dtype == np.float32
    assert np.min(np.sum(got * want, axis=1)) > 0.99999
    # each line's vector is its own (a mix-up of the order would pair it with another line's)
    assert np.allclose(got[: len(LINES)], got[len(LINES): 2 * len(LINES)], atol=1e-5)
    assert np.all(np.argmax(got[: len(LINES)] @ want[: len(LINES)].T, axis=1) == np.arange(len(LINES)))


def test_long_lines_are_cut_where_sentence_transformers_cuts_them(encoder: Encoder, sentence_transformer) -> None:
    # cut at 256 tokens (the folder's max_seq_length; its tokenizer.json says 128), padded beside one-word lines
    lines = [" ".join(LINES) * 8, " ".join(LINES) * 2, "lamp", LINES[2] * 3, "x"]
    long, longer = (len(encoder._model.tokenizer.encode(line).ids) for line in lines[:2])
    assert long == 256 and 128 < longer < 256
    got = encoder.encode(lines)
    assert np.min(np.sum(got * _reference(sentence_transformer, lines), axis=1)) > 0.99999


def test_another_pooling_loads_through_sentence_transformers(encoder: Encoder, tmp_path: Path) -> None:
    folder = tmp_path / "cls-pooled"
    source = model_path(encoder.model)
    folder.mkdir()
    for item in source.iterdir():
        if item.name != "1_Pooling":
            (folder / item.name).symlink_to(item)
    (folder / "1_Pooling").mkdir()
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    assert minilm.supported(source) and not minilm.supported(folder)
    cls = Encoder(str(folder), encoder.dim, batch_size=4)
    got = cls.encode(LINES)
    want = _reference(cls._model.st, LINES)  # sentence-transformers' own model of that folder
    assert np.min(np.sum(got * want, axis=1)) > 0.99999
    assert np.max(np.sum(got * encoder.encode(LINES), axis=1)) < 0.999  # the [CLS] token, not the mean


def test_encoding_the_packaged_model_imports_no_sentence_transformers() -> None:
    code = ("import sys; from appliance.config import load_config; from appliance.encoder import Encoder; "
            "c = load_config().encoder; v = Encoder(c.model, c.dim, c.batch_size).encode(['Tefal pan']); "
            "print(v.shape, sorted(m for m in ('sentence_transformers', 'transformers', 'scipy', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split("\n")[-2] == "(1, 384) []"


def test_a_line_asked_alone_goes_between_the_batches_of_a_bulk_call(encoder: Encoder) -> None:
    bulk = Encoder(encoder.model, encoder.dim, batch_size=4)
    bulk._model = encoder._model
    lines = LINES * 60  # 105 batches
    done = threading.Event()
    thread = threading.Thread(target=lambda: (bulk.encode(lines), done.set()))
    thread.start()
    wait_until(lambda: bulk._turns._serving >= 3, timeout=60, what="the bulk call's first batches")
    alone = bulk.encode(["Brooks Ghost 15 running shoe"])
    finished_first = not done.is_set()
    thread.join(120)
    assert alone.shape == (1, encoder.dim)
    assert finished_first  # it waited for one batch, not for the 100 left


def test_turns_serve_in_the_order_asked() -> None:
    turns, order = Turns(), []
    first = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with turns.turn():
            first.set()
            release.wait(10)
        with turns.turn():  # asks again at once: the ones already waiting go first
            order.append("holder again")

    def waiter(name: str) -> None:
        with turns.turn():
            order.append(name)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    first.wait(10)
    for name, asked in (("b", 2), ("c", 3)):
        threads.append(threading.Thread(target=waiter, args=(name,)))
        threads[-1].start()
        wait_until(lambda asked=asked: turns._next == asked, timeout=10, what=f"{name} waiting")
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["b", "c", "holder again"]
