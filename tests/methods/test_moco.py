"""moco: the entry of the registry-wide tests (tests/method_specs.py)."""

from __future__ import annotations

from tests.method_specs import MethodSpec, Mutation, Recipe

SPECS = {
    "moco": MethodSpec(
        momentum_targets=True,
        tiny=["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.queue_size=64"],
        two_processes=["method.queue_size=32"],
        # MoCo's loss rises while real keys replace the queue's random initial entries (easier negatives).
        learning=Recipe(
            ["method=moco", "method.proj_hidden_dim=128", "method.queue_size=1024", "optim.base_lr=0.5"],
            margin=4,
            loss_decreases=False,
        ),
        mutations=[
            Mutation(
                "key encoder never updated (its backbone left out of the momentum pairs)",
                "selfsup/methods/moco.py",
                "return [(self.backbone, self.key_backbone), (self.projector, self.key_projector)]",
                "return [(self.projector, self.key_projector)]",
            ),
            Mutation(
                "queue never updated",
                "selfsup/methods/moco.py",
                "        self.queue[index] = keys\n",
                "",
            ),
            Mutation(
                "keys from the online encoder (no momentum encoder)",
                "selfsup/methods/moco.py",
                "return F.normalize(self.key_projector(self.key_backbone(x)), dim=1)",
                "return F.normalize(self.projector(self.backbone(x)), dim=1).detach()",
            ),
            Mutation(
                "positive logit left out of the InfoNCE logits",
                "selfsup/losses.py",
                "logits = torch.cat([positive, q @ queue.T], dim=1) / temperature",
                "logits = torch.cat([q @ queue.T, positive], dim=1) / temperature",
            ),
        ],
    ),
}
