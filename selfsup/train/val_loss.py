"""The pretraining loss on held-out images (`eval.val_loss_every`): SimCLR toolboxes report it every few
epochs to see the pretext task over-fit, which the training loss alone cannot show.

Each process evaluates its shard of data.test_split with the training augmentations drawn from a fixed seed
(the same views at every evaluation, so the curve moves only with the weights), the model in eval mode (in
which no method moves its queues, centres or F, so every batch is scored against the training state) and no
gradients; the mean over processes is reported. The buffers (should a forward still move one) and every
random generator are restored afterwards, so a run with the evaluation trains exactly as one without.
"""

from __future__ import annotations

import torch
from lightning_fabric import Fabric
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DistributedSampler

from selfsup.data.batched_colour import BatchAugment
from selfsup.data.loader import crop_loader, load_split, resolve_num_workers
from selfsup.data.pipeline import device_views
from selfsup.errors import UserError
from selfsup.methods.base import Method, Schedule


class ValidationLoss:
    def __init__(self, cfg: DictConfig, fabric: Fabric, augment: BatchAugment, local_batch: int, channels_last: bool):
        split = cfg.data.test_split
        if not split:
            raise UserError(f"eval.val_loss_every needs a held-out split, but data {cfg.data.name} has no test_split")
        dataset = load_split(cfg.data, split)
        if len(dataset) < local_batch * fabric.world_size:
            raise UserError(
                f"eval.val_loss_every: the {len(dataset)} images of {cfg.data.name} {split} are fewer than one global "
                f"batch ({local_batch * fabric.world_size}); lower trainer.batch_size or set eval.val_loss_every=0"
            )
        # Every process gets as many batches (DistributedSampler pads), each of the training batch size: the
        # loss of batch-coupled methods depends on it.
        sampler = DistributedSampler(dataset, fabric.world_size, fabric.global_rank, shuffle=False)
        workers = resolve_num_workers(cfg.trainer.num_workers, fabric.device.type, cfg.trainer.devices)
        # The training crop path (batched on the device for in-memory data). New workers at each evaluation
        # take their seeds from the global RNG, which the evaluation seeds: every evaluation sees the same views.
        self.loader = crop_loader(
            dataset, cfg.data, cfg.views, sampler, local_batch, fabric.device, workers, keep_workers=False
        )
        self.fabric, self.augment, self.channels_last, self.seed = fabric, augment, channels_last, cfg.seed

    @torch.no_grad()
    def __call__(self, method: Method, model: nn.Module, schedule: Schedule) -> float:
        """The mean loss of `model` (the fabric-wrapped `method`) over the held-out split, at `schedule`'s step."""
        device = self.fabric.device
        buffers = {name: b.clone() for name, b in method.named_buffers()}
        training = method.training
        total, batches = torch.zeros((), device=device), 0
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            method.eval()
            for batch, _labels in self.loader:
                views = device_views(batch, self.augment, device, self.channels_last)
                total += model(views, schedule=schedule)["loss"].float()
                batches += 1
        method.train(training)
        for name, b in method.named_buffers():
            b.copy_(buffers[name])
        return float(self.fabric.all_reduce(total / batches, reduce_op="mean"))
