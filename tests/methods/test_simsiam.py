"""simsiam: the entry of the registry-wide tests (tests/method_specs.py)."""

from __future__ import annotations

from tests.method_specs import MethodSpec, Mutation, Recipe

SPECS = {
    "simsiam": MethodSpec(
        tiny=["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.predictor.hidden_dim=8"],
        two_processes=[],
        learning=Recipe(
            [
                "method=simsiam",
                "method.proj_hidden_dim=128",
                "method.proj_output_dim=128",
                "method.predictor.hidden_dim=32",
                "optim.base_lr=0.1",
            ],
            margin=5,
        ),
        mutations=[
            Mutation(
                "stop-gradient removed from the target",
                "selfsup/losses.py",
                "z = F.normalize(z.detach().float(), dim=1)",
                "z = F.normalize(z.float(), dim=1)",
            ),
            Mutation(
                "predictor skipped (p = z)",
                "selfsup/methods/simsiam.py",
                "p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)",
                "p1, p2 = z1, z2",
            ),
            Mutation(
                "views not swapped (p1 against z1)",
                "selfsup/methods/simsiam.py",
                "loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))",
                "loss = 0.5 * (negative_cosine(p1, z1) + negative_cosine(p2, z2))",
            ),
        ],
    ),
}
