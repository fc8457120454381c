"""The encoder: batch by batch it gives sentence-transformers' own vectors, in the order asked; turns are fair."""

import threading

import numpy as np

from appliance.encoder import Encoder, Turns
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


def test_vectors_are_sentence_transformers_own_in_the_order_asked(encoder: Encoder) -> None:
    small = Encoder(encoder.model, encoder.dim, batch_size=2)  # several batches of two
    small._st = encoder._st  # the loaded model, shared
    lines = LINES * 3
    got = small.encode(lines)
    want = encoder._st.encode(lines, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False)
    assert got.shape == (len(lines), encoder.dim) and got.dtype == np.float32
    assert np.min(np.sum(got * want, axis=1)) > 0.99999
    # each line's vector is its own (a mix-up of the order would pair it with another line's)
    assert np.allclose(got[: len(LINES)], got[len(LINES): 2 * len(LINES)], atol=1e-5)
    assert np.all(np.argmax(got[: len(LINES)] @ want[: len(LINES)].T, axis=1) == np.arange(len(LINES)))


def test_a_line_asked_alone_goes_between_the_batches_of_a_bulk_call(encoder: Encoder) -> None:
    bulk = Encoder(encoder.model, encoder.dim, batch_size=4)
    bulk._st = encoder._st
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
