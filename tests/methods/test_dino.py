"""dino: the entry of the registry-wide tests (tests/method_specs.py)."""

from __future__ import annotations

import math

from tests.method_specs import MIN_SPREAD, MethodSpec, Mutation, Recipe

SPECS = {
    "dino": MethodSpec(
        momentum_targets=True,
        # the fixed norms of its last layer (norm_last_layer)
        fixed_parameters=frozenset({"head.last_layer.parametrizations.weight.original0"}),
        tiny=["method.proj_hidden_dim=32", "method.bottleneck_dim=8", "method.out_dim=24"],
        two_processes=["method.freeze_last_layer_epochs=0"],
        learning=Recipe(
            [
                "method=dino",
                "method.proj_hidden_dim=128",
                "method.bottleneck_dim=64",
                "method.out_dim=256",
                "method.use_bn_in_head=true",
                "method.teacher_temperature=0.04",
                "method.student_temperature=0.2",  # at 0.1 the loss first climbs past ln(out_dim), then stalls there
                "method.momentum=0.99",  # 0.996 leaves the teacher near its init over 248 steps
                "optim=sgd",
                "optim.base_lr=0.5",
            ],
            margin=3,
            # Uniform teacher outputs have entropy ln 256; one prototype taking every image, marginal entropy 0.
            monitors=[
                ("spread", "min", MIN_SPREAD),
                ("teacher_entropy", "max", 0.85 * math.log(256)),
                ("teacher_marginal_entropy", "min", 0.5 * math.log(256)),
            ],
        ),
        mutations=[
            Mutation(
                "no centering",
                "selfsup/losses.py",
                "targets = [F.softmax((t.detach().float() - center) / teacher_temperature, dim=1) for t in"
                " teacher_out]",
                "targets = [F.softmax(t.detach().float() / teacher_temperature, dim=1) for t in teacher_out]",
            ),
            Mutation(
                "teacher never updated (its backbone left out of the momentum pairs)",
                "selfsup/methods/dino.py",
                "return [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]",
                "return [(self.head, self.teacher_head)]",
            ),
            Mutation(
                "last layer never frozen",
                "selfsup/methods/dino.py",
                "return list(self.head.last_layer.parameters()) if self.last_layer_frozen(schedule) else []",
                "return []",
            ),
            Mutation(
                "centre never updated",
                "selfsup/methods/dino.py",
                "        self.update_center(torch.cat(teacher))\n",
                "",
            ),
            Mutation(
                "teacher temperature schedule frozen at its warmup value",
                "selfsup/methods/dino.py",
                "        if at.step >= warmup:\n            return self.teacher_temperature",
                "        if False:\n            return self.teacher_temperature",
            ),
            Mutation(
                "student compared with the teacher of its own crop",
                "selfsup/losses.py",
                "                if v != i:\n                    total = total + (-(p_t * log_p_s).sum(dim=1)).mean()",
                "                if v == i or v != i:\n"
                "                    total = total + (-(p_t * log_p_s).sum(dim=1)).mean()",
            ),
        ],
    ),
}
