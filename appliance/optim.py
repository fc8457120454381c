"""AdamW for the user tower's few parameter groups, without `torch.optim`.

`torch.optim.Optimizer.add_param_group` is wrapped by `torch._disable_dynamo`, so building the first optimizer of
a process imports `torch._dynamo`: 0.9-2.9 CPU s (BENCHMARKS.md "Training"), as much as a small shop's whole
first phase. This is the same update as `torch.optim.AdamW` with its defaults on CPU (the single-tensor path:
decoupled weight decay, bias-corrected moments, a step count per parameter), so a run is the same run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch


class AdamW:
    """groups: [{"params": [...], optionally "lr", "weight_decay"}]; `lr` and `weight_decay` are the defaults.
    `step(factor)` applies each group's rate times `factor` (the schedule's multiplier at this step)."""

    def __init__(
        self, groups: Iterable[Mapping[str, Any]], lr: float, weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    ) -> None:
        self.groups = [{"lr": lr, "weight_decay": weight_decay, **group, "params": list(group["params"])}
                       for group in groups]
        self.betas, self.eps = betas, eps
        self.state: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor, list[int]]] = {}

    def zero_grad(self) -> None:
        for group in self.groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self, factor: float = 1.0) -> None:
        beta1, beta2 = self.betas
        for group in self.groups:
            lr = group["lr"] * factor
            for p in group["params"]:
                if p.grad is None:  # as torch: a parameter without a gradient neither moves nor counts a step
                    continue
                if p not in self.state:
                    self.state[p] = (torch.zeros_like(p), torch.zeros_like(p), [0])
                average, square, count = self.state[p]
                count[0] += 1
                p.mul_(1.0 - lr * group["weight_decay"])
                average.lerp_(p.grad, 1.0 - beta1)
                square.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                denominator = (square.sqrt() / (1.0 - beta2 ** count[0]) ** 0.5).add_(self.eps)
                p.addcdiv_(average, denominator, value=-lr / (1.0 - beta1 ** count[0]))
