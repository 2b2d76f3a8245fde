"""Learning-rate policies, stepped once per batch; `lr.value` is the base (peak) rate.

Each is a thin wrapper over a torch scheduler, built by Hydra from `conf/lr/*.yaml` as a partial
that receives the optimizer and the run's length.
"""

from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched


def constant(optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> sched.LRScheduler:
    return sched.ConstantLR(optimizer, factor=1.0, total_iters=0)


def step(
    optimizer: Optimizer, epochs: int, steps_per_epoch: int,
    milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1,
) -> sched.LRScheduler:
    """Multiply the rate by `gamma` at each milestone, given as fractions of the run."""
    total = epochs * steps_per_epoch
    return sched.MultiStepLR(optimizer, [round(m * total) for m in milestones], gamma=gamma)


def cosine(
    optimizer: Optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
) -> sched.LRScheduler:
    total = epochs * steps_per_epoch
    warmup = round(warmup_epochs * steps_per_epoch)
    decay = sched.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    if warmup == 0:
        return decay
    ramp = sched.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup)
    return sched.SequentialLR(optimizer, [ramp, decay], milestones=[warmup])


def onecycle(
    optimizer: Optimizer, epochs: int, steps_per_epoch: int,
    pct_start: float = 0.25, div_factor: float = 25.0, final_div_factor: float = 1e3,
) -> sched.LRScheduler:
    max_lr = [group["lr"] for group in optimizer.param_groups]
    return sched.OneCycleLR(
        optimizer, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
        pct_start=pct_start, div_factor=div_factor, final_div_factor=final_div_factor,
        cycle_momentum=False,
    )
