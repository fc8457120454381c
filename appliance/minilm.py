"""A BERT sentence encoder (mean pooling, L2-normalised) in plain torch, read from a sentence-transformers folder.

What sentence-transformers does for all-MiniLM-L6-v2 (its `Transformer` -> `Pooling` (mean) -> `Normalize`
modules), without importing it: `import sentence_transformers` pulls in transformers, scipy, sympy, sklearn and
more, **+196 MiB of RSS** in every process that encodes (measured in BENCHMARKS.md, "Fourth round"), a fifth of
the server's 1 GB budget during a bulk import. The weights are read from `model.safetensors` (memory-mapped, not
copied), the lines tokenized by the folder's `tokenizer.json` (the `tokenizers` package), truncated at the folder's
`max_seq_length`. Other folders (another architecture or pooling) are not `supported` and load through
sentence-transformers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

POOLING = "sentence_transformers.models.Pooling"
MODULES = ("sentence_transformers.models.Transformer", POOLING, "sentence_transformers.models.Normalize")


def supported(folder: Path) -> bool:
    """A BERT model with mean pooling and L2 normalisation, its weights in safetensors and a fast tokenizer."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        config = json.loads((folder / "config.json").read_text())
        pool_path = next(m["path"] for m in modules if m["type"] == POOLING)
        pooling = json.loads((folder / pool_path / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return False
    means = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    return (tuple(m["type"] for m in modules) == MODULES and means == ["pooling_mode_mean_tokens"]
            and config.get("model_type") == "bert" and config.get("hidden_act") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file())


class MiniLM:
    """`encode(texts)` -> (N, dim) float32 unit vectors, as sentence-transformers' `encode(normalize_embeddings=True)`
    of the same folder gives them (cosine > 0.99999, tests/test_encoder.py)."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text())
        self.dim = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        max_len = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_len)  # sentence-transformers' max_seq_length, not the file's own
        self.tokenizer.enable_padding(pad_id=config.get("pad_token_id", 0))  # to the longest line of a batch
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            names = f.keys()  # a safetensors file is not iterable
            self.w = {k: f.get_tensor(k) for k in names if not k.startswith("pooler.")}  # the pooler is unused

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def _layer(self, x: torch.Tensor, mask: torch.Tensor, i: int) -> torch.Tensor:
        p = f"encoder.layer.{i}."
        b, t, _ = x.shape  # (B, T, C)

        def heads(name: str) -> torch.Tensor:  # (B, H, T, C/H)
            return self._linear(x, p + f"attention.self.{name}").view(b, t, self.heads, -1).transpose(1, 2)

        att = F.scaled_dot_product_attention(heads("query"), heads("key"), heads("value"), attn_mask=mask,
                                             scale=1.0 / math.sqrt(self.dim // self.heads))
        att = att.transpose(1, 2).reshape(b, t, self.dim)
        x = self._norm(self._linear(att, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        hidden = F.gelu(self._linear(x, p + "intermediate.dense"))  # (B, T, 4C), exact GELU as BERT's "gelu"
        return self._norm(self._linear(hidden, p + "output.dense") + x, p + "output.LayerNorm")

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One batch: (N,) texts -> (N, dim) float32, L2-normalised mean of the token vectors."""
        found = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in found], dtype=torch.long)  # (B, T)
        keep = torch.tensor([e.attention_mask for e in found], dtype=torch.bool)  # (B, T)
        e = "embeddings."
        x = (self.w[e + "word_embeddings.weight"][ids] + self.w[e + "position_embeddings.weight"][:ids.shape[1]]
             + self.w[e + "token_type_embeddings.weight"][0])
        x = self._norm(x, e + "LayerNorm")
        mask = keep[:, None, None, :]  # (B, 1, 1, T): no query attends to padding
        for i in range(self.layers):
            x = self._layer(x, mask, i)
        weights = keep.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1).numpy().astype(np.float32, copy=False)
