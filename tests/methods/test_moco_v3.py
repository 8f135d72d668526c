"""moco_v3: the entry of the registry-wide tests (tests/method_specs.py)."""

from __future__ import annotations

from tests.method_specs import MethodSpec, Mutation, Recipe

SPECS = {
    "moco_v3": MethodSpec(
        momentum_targets=True,
        tiny=["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.pred_hidden_dim=32"],
        two_processes=[],
        # The momentum encoder at 0.9: at the preset's 0.99 -> 1 it stays near its init over 248 steps
        # (+4.4 to +4.9 kNN; +6.3 to +15.3 at 0.9).
        learning=Recipe(
            [
                "method=moco_v3",
                "method.proj_hidden_dim=128",
                "method.proj_output_dim=64",
                "method.pred_hidden_dim=128",
                "method.momentum=0.9",
                "optim=sgd",
                "optim.base_lr=0.5",
                "optim.weight_decay=1e-5",
                "optim.warmup_epochs=1",
            ],
            margin=3,
        ),
        mutations=[
            Mutation(
                "momentum encoder never updated (its backbone left out of the momentum pairs)",
                "selfsup/methods/moco_v3.py",
                "return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]",
                "return [(self.projector, self.momentum_projector)]",
            ),
            Mutation(
                "loss not scaled by 2T",
                "selfsup/losses.py",
                "return F.cross_entropy(logits, target) * 2 * temperature",
                "return F.cross_entropy(logits, target)",
            ),
            Mutation(
                "positives mismatched (query i against key i + 1)",
                "selfsup/losses.py",
                "target = torch.arange(q.shape[0], device=q.device) + offset",
                "target = (torch.arange(q.shape[0], device=q.device) + offset + 1) % k.shape[0]",
            ),
            Mutation(
                "keys from the online network (no momentum encoder)",
                "selfsup/methods/moco_v3.py",
                "k1, k2 = self.momentum_projector(self.momentum_backbone(x)).chunk(2)",
                "k1, k2 = self.projector(self.backbone(x)).chunk(2)",
            ),
        ],
    ),
}
