"""swav: the entry of the registry-wide tests (tests/method_specs.py)."""

from __future__ import annotations

import math

from tests.method_specs import MIN_SPREAD, MethodSpec, Mutation, Recipe

SPECS = {
    "swav": MethodSpec(
        tiny=["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.num_prototypes=12"],
        two_processes=["method.freeze_prototypes_epochs=0"],
        learning=Recipe(
            ["method=swav", "method.num_prototypes=30", "method.freeze_prototypes_epochs=1", "optim.base_lr=2.4"],
            margin=3,
            monitors=[("spread", "min", MIN_SPREAD), ("code_marginal_entropy", "min", 0.5 * math.log(30))],
        ),
        mutations=[
            Mutation(
                "codes by softmax, no Sinkhorn",
                "selfsup/methods/swav.py",
                "codes = sinkhorn(batch, self.eps, self.iters, sum_over_processes)[: scores.shape[0]]",
                "codes = torch.softmax(batch / self.eps, dim=1)[: scores.shape[0]]",
            ),
            Mutation(
                "prediction not swapped (a crop predicts its own code)",
                "selfsup/losses.py",
                "others = [-(q * lp).sum(dim=1).mean() for v, lp in enumerate(log_probs) if v != i]",
                "others = [-(q * lp).sum(dim=1).mean() for v, lp in enumerate(log_probs) if v == i]",
            ),
            Mutation(
                "prototypes never normalised",
                "selfsup/methods/swav.py",
                "    def after_optimizer_step(self, step: int, total_steps: int) -> None:\n"
                "        self.normalize_prototypes()",
                "    def after_optimizer_step(self, step: int, total_steps: int) -> None:\n        pass",
            ),
            Mutation(
                "prototypes never frozen",
                "selfsup/methods/swav.py",
                "return [self.prototypes.weight] if at.step < at.steps(self.freeze_prototypes_epochs) else []",
                "return []",
            ),
        ],
    ),
}
