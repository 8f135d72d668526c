"""vicreg: the entry of the registry-wide tests (tests/method_specs.py)."""

from __future__ import annotations

from tests.method_specs import MIN_SPREAD, MethodSpec, Mutation, Recipe

SPECS = {
    "vicreg": MethodSpec(
        tiny=["method.proj_hidden_dim=32", "method.proj_output_dim=32"],
        two_processes=[],
        # SGD with the gradient norm clipped at 1: unclipped, the covariance term (fourth order in the embeddings)
        # runs away within 6 steps at this lr in fp32 (its gradient grows with the cube of the embeddings' scale,
        # RESULTS.md); the paper's LARS at batch 64 and linear lr scaling moves the weights ~2% in 248 steps.
        learning=Recipe(
            [
                "method=vicreg",
                "method.proj_hidden_dim=128",
                "method.proj_output_dim=128",
                "optim=sgd",
                "optim.base_lr=1.0",
                "trainer.grad_clip=1.0",
            ],
            margin=5,
            monitors=[("spread", "min", MIN_SPREAD), ("variance", "max", 0.9)],
        ),
        mutations=[
            Mutation(
                "variance term dropped",
                "selfsup/methods/vicreg.py",
                'loss = sim * terms["invariance"] + var * terms["variance"] + cov * terms["covariance"]',
                'loss = sim * terms["invariance"] + cov * terms["covariance"]',
            ),
            Mutation(
                "covariance term dropped",
                "selfsup/methods/vicreg.py",
                'loss = sim * terms["invariance"] + var * terms["variance"] + cov * terms["covariance"]',
                'loss = sim * terms["invariance"] + var * terms["variance"]',
            ),
            Mutation(
                "covariance diagonal not removed",
                "selfsup/losses.py",
                "covariance = covariance + _off_diagonal(cov).pow(2).sum() / d",
                "covariance = covariance + cov.pow(2).sum() / d",
            ),
            Mutation(
                "variance hinge on the variance instead of the std",
                "selfsup/losses.py",
                "std = torch.sqrt(z.var(dim=0) + eps)",
                "std = z.var(dim=0) + eps",
            ),
        ],
    ),
}
