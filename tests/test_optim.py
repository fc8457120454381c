"""Our AdamW is torch's (same update, bitwise), and training a tower never imports torch._dynamo."""

import subprocess
import sys

import torch

from appliance.optim import AdamW


def _model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))


def test_adamw_takes_the_same_steps_as_torchs_with_groups_schedule_and_missing_gradients():
    ours, theirs = _model(0), _model(0)
    factors = [0.25, 0.5, 1.0, 0.9, 0.3, 0.0, 0.7]

    def groups(model):
        first, second = model[0], model[2]
        return [{"params": list(first.parameters())},
                {"params": [second.weight], "lr": 0.05, "weight_decay": 0.0}, {"params": [second.bias]}]

    mine = AdamW(groups(ours), lr=0.01, weight_decay=0.1)
    reference = torch.optim.AdamW(groups(theirs), lr=0.01, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(reference, lambda step: factors[step])
    g = torch.Generator().manual_seed(1)
    for step, factor in enumerate(factors[:-1]):
        x, y = torch.randn(8, 6, generator=g), torch.randn(8, 2, generator=g)
        for model, optimizer in ((ours, mine), (theirs, reference)):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            if step == 2:  # a parameter without a gradient this step: it must neither move nor count the step
                model[2].bias.grad = None
        mine.step(factor)
        reference.step()
        schedule.step()
    moved = [not torch.equal(a, b) for a, b in zip(ours.parameters(), _model(0).parameters(), strict=True)]
    assert all(moved)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_training_a_tower_does_not_import_torch_dynamo():
    script = """
import sys, dataclasses
from appliance.config import load_config
from appliance.training import train_tower
from tests.test_training import small_shop
cfg = load_config()
inter, vectors = small_shop(seed=3)
train_tower(inter, vectors, cfg.tower, dataclasses.replace(cfg.training, epochs=1), cfg.events.weights, 72.0)
print('torch._dynamo' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
