"""The fast training recipe: shared negatives estimate the full softmax, the prior over columns matches the full
one, a small catalog trains exactly as `full`, and the caps bound an epoch and the validation set."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from appliance.config import load_config
from appliance.examples import MomentPrior, PopularityPrior, batch_inputs, make_examples
from appliance.loss import contrastive_loss
from appliance.schedule import latest_within_noise, learning_rate_factor, matmul_precision, network_plan, shared_columns
from appliance.tower import UserTower
from appliance.training import train_tower
from tests.test_training import small_shop


@pytest.fixture(scope="module")
def config():
    cfg = load_config()
    # the recipe as configured (min_network_steps 0: no small-shop plan, tested on its own below)
    training = dataclasses.replace(cfg.training, epochs=2, batch_size=64, min_network_steps=0)
    return cfg.tower, training, cfg.events.weights


def _loss_inputs(seed=0, B=6, N=40, D=8, T=3):
    g = torch.Generator().manual_seed(seed)
    user = F.normalize(torch.randn(B, D, generator=g), dim=-1)
    items = F.normalize(torch.randn(N, D, generator=g), dim=-1)
    target = torch.randperm(N, generator=g)[:B]
    seen = (target[:, None] + 1 + torch.arange(T)) % N  # (B, T) history products, never the target
    prior = torch.rand(B, N, generator=g)
    return user, items, target, seen, prior


def test_shared_negatives_over_the_whole_catalog_are_the_full_softmax(config):
    _, training, _ = config
    user, items, target, seen, prior = _loss_inputs()
    B, N = len(target), len(items)
    weight, log_q, g = torch.ones(B), torch.zeros(N), torch.Generator()
    own = prior.gather(1, target[:, None]).squeeze(1)
    full = contrastive_loss(user, target, weight, items, log_q, dataclasses.replace(training, negatives="full"), g,
                            seen, prior, None, own)
    # the textbook full softmax: every product but the history, the target's column labelled
    logits = ((user @ items.T + prior) / training.temperature).scatter(1, seen, -math.inf)
    assert full.item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-5)
    every = torch.randperm(N)  # all products as the shared columns, in any order
    shared = contrastive_loss(user, target, weight, items, log_q, dataclasses.replace(training, negatives="shared"),
                              g, seen, prior[:, every], every, own)
    assert shared.item() == pytest.approx(full.item(), rel=1e-5)


def test_shared_negatives_leave_out_the_positive_and_the_history_and_scale_to_the_catalog(config):
    _, training, _ = config
    user, items, target, seen, prior = _loss_inputs(seed=1)
    N = len(items)
    shared_cfg = dataclasses.replace(training, negatives="shared")
    columns = torch.cat([target[:1], seen[0], torch.tensor([39, 38])]).unique()  # row 0's own products + others
    own = prior.gather(1, target[:, None]).squeeze(1)
    loss = contrastive_loss(user[:1], target[:1], torch.ones(1), items, torch.zeros(N), shared_cfg, torch.Generator(),
                            seen[:1], prior[:1, columns], columns, own[:1])
    others = torch.tensor([c for c in columns.tolist() if c not in [target[0].item(), *seen[0].tolist()]])
    positive = (user[0] @ items[target[0]] + own[0]) / training.temperature
    negatives = (user[0] @ items[others].T + prior[0, others]) / training.temperature + math.log(N / len(columns))
    expected = -positive + torch.logsumexp(torch.cat([positive[None], negatives]), 0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("cold_quantile", [0.0, 0.75])
@pytest.mark.parametrize("source", [PopularityPrior, MomentPrior])
def test_the_prior_over_columns_and_of_the_positive_match_the_full_rows(config, source, cold_quantile):
    _, _, weights = config
    inter, _ = small_shop(seed=2)
    prior = source(inter, 120, weights, half_life_hours=24.0)
    ex = make_examples(inter, history=20)
    plain = prior.rows(ex)  # (M, N) cold products at 0
    prior.set_cold_quantile(cold_quantile)
    full = prior.rows(ex)
    columns = torch.tensor([5, 0, 77, 119, 31])
    positives = full[torch.arange(len(ex.target)), inter.item[ex.target]]
    if cold_quantile:  # the quantile moves the cold products these columns and positives hold
        assert not torch.equal(full[:, columns], plain[:, columns]) and prior.is_cold(ex).any()
    assert torch.equal(prior.rows(ex, columns), full[:, columns])
    assert torch.equal(prior.positive(ex), positives)


@pytest.mark.parametrize("within", ["shared_negatives", "whole_catalog"])
def test_a_catalog_within_shared_negatives_or_whole_catalog_trains_exactly_as_full(config, within):
    tower, training, weights = config
    inter, vectors = small_shop(seed=3)
    full, _ = train_tower(inter, vectors, tower, dataclasses.replace(training, negatives="full"), weights, 72.0)
    sizes = {"shared_negatives": 16, "whole_catalog": 0, within: len(vectors)}
    shared, _ = train_tower(inter, vectors, tower, dataclasses.replace(training, negatives="shared", **sizes),
                            weights, 72.0)
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, shared.state_dict()[name]), name


@pytest.mark.parametrize("precision", ["bfloat16", "float32"])
def test_shared_negatives_from_a_larger_catalog_lower_the_loss(config, precision):
    tower, training, weights = config
    inter, vectors = small_shop(seed=1)
    training = dataclasses.replace(training, negatives="shared", shared_negatives=16, whole_catalog=0,
                                   precision=precision, epochs=3, patience=9)
    _, report = train_tower(inter, vectors, tower, training, weights, 72.0)
    assert all(np.isfinite(report.losses)) and report.losses[-1] < report.losses[0]


def test_an_epoch_and_the_validation_set_are_capped(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=4)
    capped = dataclasses.replace(training, epochs=1, epoch_examples=100, validation_examples=7, scalar_batch_size=25)
    events = []
    _, report = train_tower(inter, vectors, tower, capped, weights, progress=events.append)
    assert report.validation_examples == 7 and report.examples > 100
    steps = [e["steps"] for e in events if "step" in e]  # each phase in batches of its own size
    assert steps[0] == math.ceil(100 / 25) and steps[-1] == math.ceil(100 / training.batch_size)


def test_the_tower_without_its_attention_branch_is_exact_while_that_branch_is_zero(config):
    tower, _, weights = config
    inter, vectors = small_shop(seed=5)
    ex = make_examples(inter, history=tower.history).take(np.arange(30))
    inputs = batch_inputs(ex, inter, torch.as_tensor(vectors))
    model = UserTower(tower, vectors.shape[1])
    with torch.no_grad():
        model.kind_bias.copy_(torch.randn(len(model.kind_bias)))
        assert torch.equal(model(*inputs, attention=False), model(*inputs))  # `out` starts at zero
        model.out.weight.normal_()
        assert not torch.allclose(model(*inputs, attention=False), model(*inputs))  # once trained, it counts


def test_the_learning_rate_warms_up_then_follows_a_cosine_to_zero():
    assert [learning_rate_factor(s, 4, 0) for s in (0, 1, 3, 4, 100)] == [0.25, 0.5, 1.0, 1.0, 1.0]  # constant
    cosine = [learning_rate_factor(s, 4, 12) for s in range(14)]
    assert cosine[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert cosine[8] == pytest.approx(0.5) and cosine[12] == cosine[13] == 0.0
    assert all(a >= b for a, b in zip(cosine[3:], cosine[4:], strict=False))


def test_a_cosine_run_trains_and_keeps_its_best_epoch(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=6)
    cosine = dataclasses.replace(training, schedule="cosine", epochs=4, patience=9)
    _, report = train_tower(inter, vectors, tower, cosine, weights, 72.0)
    assert report.epochs > report.scalar_epochs and all(np.isfinite(report.losses))
    assert report.best_validation_ndcg == max(report.validation)


@pytest.mark.parametrize("with_positives", [False, True])
def test_the_shared_columns_over_their_inclusion_probability_estimate_the_whole_catalogs_sum(with_positives):
    n, k, batch, trials = 60, 8, 6, 6000
    g = torch.Generator().manual_seed(0)
    share = 1.0 / torch.arange(1, n + 1, dtype=torch.float64) ** 1.2  # a few popular products
    share /= share.sum()
    exponentials = torch.rand(n, generator=g, dtype=torch.float64) * 3.0  # exp(logit) of each product
    estimates, popular_drawn = [], 0
    for _ in range(trials):
        positives = torch.multinomial(share, batch, replacement=True, generator=g)
        columns, log_inclusion = shared_columns(n, k, positives, share if with_positives else None, g)
        if log_inclusion is None:
            log_inclusion = torch.full((len(columns),), math.log(k / n), dtype=torch.float64)
        estimates.append((exponentials[columns] / log_inclusion.double().exp()).sum().item())
        popular_drawn += bool((columns == 0).any())
    assert np.mean(estimates) == pytest.approx(exponentials.sum().item(), rel=0.02)  # unbiased
    if with_positives:  # the most popular product is nearly always a negative, not 1 batch in n / k
        assert popular_drawn / trials > 0.85
        assert (columns.unique() == columns).all() and len(columns) <= k + batch


def test_the_first_phase_ends_after_scalar_examples(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=7)
    free = dataclasses.replace(training, epochs=4, patience=9, scalar_examples=10**9)
    _, report = train_tower(inter, vectors, tower, free, weights, 72.0)
    _, capped = train_tower(inter, vectors, tower, dataclasses.replace(free, scalar_examples=1), weights, 72.0)
    assert report.scalar_epochs > 1 and capped.scalar_epochs == 1 and capped.validated_epochs[:2] == [0, 1]


def test_a_small_shop_gets_smaller_batches_and_more_epochs_a_large_one_the_configured_recipe():
    shipped = load_config().training  # batch 512, scalar batch 128, 8 epochs, at least 1,000 network steps
    assert network_plan(66_886, shipped) == (512, 8, 1.0)  # shop-100k: 131 steps an epoch, 1,048 in all
    batch, epochs, rate = network_plan(6_243, shipped)  # the demo: 13 steps an epoch at 512
    assert batch == 128 and rate == 128 / 512  # not under the first phase's batch; rates scaled with it
    assert epochs == 21 and epochs * math.ceil(6_243 / batch) >= shipped.min_network_steps
    assert network_plan(20, shipped) == (128, 24, 0.25)  # a handful of examples: at most 3 x the epochs
    assert network_plan(6_243, dataclasses.replace(shipped, min_network_steps=0)) == (512, 8, 1.0)  # off


def test_mixed_negatives_correct_the_in_batch_columns_by_the_batch_they_are_given(config):
    """The in-batch columns' logQ is the log of each positive's expected count in this batch (B x its share),
    whatever `batch_size` says (the first phase and the last step of an epoch have other sizes)."""
    _, training, _ = config
    user, items, target, _, prior = _loss_inputs(B=4)
    B, N, S = len(target), len(items), training.sampled_negatives
    share = torch.rand(N, generator=torch.Generator().manual_seed(1)) + 0.1
    log_q = (share / share.sum()).log()
    mixed = dataclasses.replace(training, negatives="mixed", batch_size=512)
    loss = contrastive_loss(user, target, torch.ones(B), items, log_q, mixed, torch.Generator().manual_seed(5),
                            prior=prior)
    negative = torch.randint(N, (B, S), generator=torch.Generator().manual_seed(5))  # the loss's own draw
    in_batch = (user @ items[target].T + prior[:, target]) / mixed.temperature - (log_q[target] + math.log(B))
    sampled = (torch.einsum("bd,bsd->bs", user, items[negative]) + prior.gather(1, negative)) / mixed.temperature
    sampled = (sampled - math.log(S / N)).masked_fill(negative == target[:, None], -math.inf)
    expected = F.cross_entropy(torch.cat([in_batch, sampled], dim=1), torch.arange(B))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    wrong = in_batch - math.log(512 / B)  # the configured batch's count: the in-batch block weighs 128x more
    assert F.cross_entropy(torch.cat([wrong, sampled], dim=1), torch.arange(B)).item() != pytest.approx(loss.item())


def test_the_latest_network_epoch_within_noise_of_a_network_best_is_kept():
    rng = np.random.default_rng(0)
    best = rng.random(600) * (rng.random(600) < 0.1)  # NDCG@10 per validation example: mostly 0
    noisy = best + np.r_[np.full(60, 0.05), np.full(70, -0.05), np.zeros(470)]  # a little below, within noise
    worse = best * 0.5  # far below: every hit halved
    validated = [(1, False, best * 0.9), (3, True, best), (5, True, noisy), (7, True, worse), (9, True, noisy)]
    assert latest_within_noise(validated, 3, 1.0) == 4  # epoch 9: the latest within one standard error
    assert latest_within_noise(validated[:4], 3, 1.0) == 2  # epoch 7 is measurably worse: epoch 5
    assert latest_within_noise(validated[:4], 3, 0.0) is None  # 0: the best itself
    assert latest_within_noise(validated[:2], 1, 1.0) is None  # no later epoch of the first phase
    first = [(1, False, best), (2, False, noisy), (3, True, noisy)]
    assert latest_within_noise(first, 1, 1.0) is None  # a first-phase best is kept: its rate has no converged end
    assert latest_within_noise(validated, 0, 1.0) is None  # the initial tower: no per-example rows, kept
    assert noisy.mean() < best.mean() and worse.mean() < noisy.mean()


def test_training_reports_the_top_epoch_and_keeps_one_it_validated(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=4)
    _, report = train_tower(inter, vectors, tower, dataclasses.replace(training, epochs=4), weights, 24.0)
    assert report.best_epoch >= report.top_epoch and report.best_epoch in report.validated_epochs
    top = report.validation[report.validated_epochs.index(report.top_epoch)]
    assert top == max(report.validation)


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"), [(True, False, "bfloat16"), (False, True, "bfloat16"),
                                                             (False, False, "float32")])
def test_auto_precision_is_bfloat16_only_where_the_cpu_multiplies_it_natively(monkeypatch, avx512_bf16, amx,
                                                                               expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert matmul_precision("auto") == expected
    assert matmul_precision("float32") == "float32" and matmul_precision("bfloat16") == "bfloat16"  # as set


def test_training_reports_the_precision_it_ran_in(config):
    tower, training, weights = config
    inter, vectors = small_shop(seed=4)
    _, report = train_tower(inter, vectors, tower, dataclasses.replace(training, epochs=1), weights, 24.0)
    assert load_config().training.precision == "auto" and report.precision == matmul_precision("auto")
    _, forced = train_tower(inter, vectors, tower, dataclasses.replace(training, epochs=1, precision="bfloat16"),
                            weights, 24.0)
    assert forced.precision == "bfloat16"
