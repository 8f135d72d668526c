"""barlow: the entry of the registry-wide tests (tests/method_specs.py)."""

from __future__ import annotations

from tests.method_specs import MethodSpec, Mutation, Recipe

SPECS = {
    "barlow": MethodSpec(
        tiny=["method.proj_hidden_dim=32", "method.proj_output_dim=32"],
        two_processes=[],
        # Clipped like VICReg: unclipped at lr 0.2-0.5 it collapsed to rank 3.5 (+1 to +2 kNN) in bf16.
        learning=Recipe(
            [
                "method=barlow",
                "method.proj_hidden_dim=128",
                "method.proj_output_dim=128",
                "optim=sgd",
                "optim.base_lr=0.3",
                "optim.warmup_epochs=1",
            ]
            + ["trainer.grad_clip=1.0"],
            margin=8,
        ),
        mutations=[
            Mutation(
                "embeddings not standardised along the batch",
                "selfsup/losses.py",
                "z1n, z2n = (F.batch_norm(z.float(), None, None, training=True, eps=eps) for z in (z1, z2))",
                "z1n, z2n = (z.float() for z in (z1, z2))",
            ),
            Mutation(
                "redundancy term dropped (lambda 0)",
                "selfsup/losses.py",
                "return on_diagonal + lambd * _off_diagonal(c).pow(2).sum()",
                "return on_diagonal",
            ),
            Mutation(
                "cross-correlation of a view with itself",
                "selfsup/losses.py",
                "c = z1n.T @ z2n / n",
                "c = z1n.T @ z1n / n",
            ),
        ],
    ),
}
