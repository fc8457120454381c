"""The item-side correction, measured as an ablation (BENCHMARKS.md): products that share a text line share a
vector, so only the prior tells them apart. Here a learned per-product vector is added to the text vector of
every product with at least `min_events` training events (zero for the others: a new product stays its text),
fitted after the tower against its fixed user vectors with the tower's own loss (softmax over the whole catalog,
cosine + its prior), and kept epoch by epoch only while the validation NDCG@10 gains (epoch 0: no correction).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from appliance.config_sections import TrainingConfig
from appliance.examples import MomentPrior, PopularityPrior, batch_inputs, make_examples, split_validation
from appliance.interactions import Interactions
from appliance.prior import ndcg_at_10, scored_validation
from appliance.tower import UserTower


def item_correction(
    model: UserTower, interactions: Interactions, item_vectors: np.ndarray, config: TrainingConfig,
    event_weights: Mapping[str, float], min_events: int = 5, epochs: int = 6, learning_rate: float = 0.001,
) -> tuple[np.ndarray, list[float]]:
    """(N, D) unit vectors to retrieve against (text + correction), and the validation NDCG@10 per epoch."""
    rng = np.random.default_rng(config.seed)  # training's draw: the same validation examples
    examples = make_examples(interactions, model.config.history)
    train, val = split_validation(examples, interactions, config.validation_fraction, rng, config.validation_examples)
    source = MomentPrior if config.prior_as_of == "moment" else PopularityPrior
    prior = source(interactions, len(item_vectors), event_weights, config.prior_half_life_hours)
    vectors = torch.as_tensor(np.require(item_vectors, np.float32, ["W"]))  # (N, D)
    eligible = torch.as_tensor(np.bincount(interactions.item, minlength=len(vectors)) >= min_events)[:, None]
    delta = torch.zeros_like(vectors, requires_grad=True)  # (N, D)
    optimizer = torch.optim.Adam([delta], lr=learning_rate)
    weight = model.popularity_weight.item()
    generator = torch.Generator().manual_seed(config.seed)

    def adapted() -> torch.Tensor:
        return F.normalize(vectors + delta * eligible, dim=-1)

    def validate() -> float:
        with torch.no_grad():
            targets = adapted()
        return float(np.concatenate([ndcg_at_10(scores, relevant) for _, _, scores, _, relevant in
                                     scored_validation(model, val, interactions, vectors, prior, targets)]).mean())

    model.eval()
    with torch.no_grad():
        users = torch.cat([model(*batch_inputs(train.take(slice(i, i + 1024)), interactions, vectors))
                           for i in range(0, len(train.target), 1024)])  # (M, D) fixed
    target = torch.as_tensor(interactions.item[train.target])
    history = [validate()]
    best, best_delta = history[0], delta.detach().clone()
    for _ in range(epochs):
        for batch in torch.randperm(len(target), generator=generator).split(config.batch_size):
            ex = train.take(batch.numpy())
            logits = users[batch] @ adapted().T + (weight * prior.rows(ex) if weight else 0.0)  # (B, N)
            loss = F.cross_entropy(logits / config.temperature, target[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        history.append(validate())
        if history[-1] > best:
            best, best_delta = history[-1], delta.detach().clone()
    with torch.no_grad():
        delta.copy_(best_delta)
        return adapted().numpy(), history
