"""One-off probe (BENCHMARKS.md "Training", seventh round, measured and not taken): CPU ms of a network step's
(B, K) loss block and of the history's weighted mean, as shipped and in the variants tried, at shop-100k's sizes
(B 512, K 1,450 columns, N 10k products, D 384, T 20), one thread, alternated.
Run: PYTHONPATH=. .venv/bin/python bench/probes/train7_step_variants.py"""
import math
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.manual_seed(0)
B, K, N, D, T, TEMPERATURE = 512, 1450, 10000, 384, 20, 0.05
items = F.normalize(torch.randn(N, D), dim=-1)
columns = torch.randperm(N)[:K]
log_inclusion = torch.log(torch.rand(K) * 0.5 + 0.1)
target, seen = torch.randint(N, (B,)), torch.randint(N, (B, T))
prior_rows, own, weight = torch.rand(B, K) * 5, torch.rand(B) * 5, torch.tensor(0.1, requires_grad=True)
start = torch.randn(B, D)


def hidden_columns():
    where = torch.full((N,), K)
    where[columns] = torch.arange(K)
    return where[torch.cat([target[:, None], seen], 1)]  # (B, 1 + T): K where not among the columns


def shipped(user, prior, positive_prior):  # appliance.loss.contrastive_loss's "shared" block
    negative = user @ items[columns].T + prior
    positive = (user * items[target]).sum(-1) + positive_prior
    negative = torch.cat([negative / TEMPERATURE - log_inclusion, torch.zeros(B, 1)], dim=1)
    negative = negative.scatter(1, hidden_columns(), -math.inf)[:, :K]
    logits = torch.cat([positive[:, None] / TEMPERATURE, negative], dim=1)
    return F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))


def masked_logsumexp(user, prior, positive_prior):  # a bool mask and logsumexp instead of the scatter and cats
    negative = user @ items[columns].T + prior
    positive = ((user * items[target]).sum(-1) + positive_prior) / TEMPERATURE
    masked = torch.zeros(B, K + 1, dtype=torch.bool).scatter_(1, hidden_columns(), True)[:, :K]
    negative = (negative / TEMPERATURE - log_inclusion).masked_fill(masked, -math.inf)
    return (torch.logaddexp(positive, torch.logsumexp(negative, 1)) - positive).mean()


def folded_addmm(user, prior, positive_prior):  # the prior, logQ and mask folded into one addmm's bias
    positive = (user * items[target]).sum(-1) + positive_prior
    masked = torch.zeros(B, K + 1, dtype=torch.bool).scatter_(1, hidden_columns(), True)[:, :K]
    bias = (prior - TEMPERATURE * log_inclusion).masked_fill(masked, -math.inf)
    logits = torch.cat([positive[:, None], torch.addmm(bias, user, items[columns].T)], dim=1) / TEMPERATURE
    return F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))


slots, mean_logits, upstream = torch.randint(N, (B, T)), torch.randn(B, T), torch.randn(B, D)


def mean_gathered():  # the tower's: a (B, T, D) block, then a batched product
    w = mean_logits.clone().requires_grad_(True)
    rows = items.index_select(0, slots.reshape(-1)).view(B, T, D)
    ((w.softmax(1)[:, None, :] @ rows).squeeze(1) * upstream).sum().backward()


def mean_embedding_bag():  # the rows read in place by embedding_bag, torch's backward of per-sample weights
    w = mean_logits.clone().requires_grad_(True)
    (F.embedding_bag(slots, items, per_sample_weights=w.softmax(1), mode="sum") * upstream).sum().backward()


def cpu_ms(function, repeat=30):
    function()
    started = time.process_time()
    for _ in range(repeat):
        function()
    return (time.process_time() - started) / repeat * 1e3


for variant in (shipped, masked_logsumexp, folded_addmm):
    user = start.clone().requires_grad_(True)
    variant(user, weight * prior_rows, weight * own).backward()
    print(f"{variant.__name__}: loss {variant(start, prior_rows, own).item():.6f}, "
          f"|grad user| {user.grad.abs().sum().item():.4f}")
for _ in range(3):
    for variant in (shipped, masked_logsumexp, folded_addmm):
        user = start.clone().requires_grad_(True)
        print(f"{variant.__name__}: forward and backward "
              f"{cpu_ms(lambda v=variant, u=user: v(u, weight * prior_rows, weight * own).backward()):.2f} ms")
    for variant in (mean_gathered, mean_embedding_bag):
        print(f"{variant.__name__}: forward and backward {cpu_ms(variant):.2f} ms")
