"""simclr: the entry of the registry-wide tests (tests/method_specs.py)."""

from __future__ import annotations

from tests.method_specs import MethodSpec, Mutation, Recipe

SPECS = {
    "simclr": MethodSpec(
        tiny=["method.proj_hidden_dim=32", "method.proj_output_dim=16"],
        two_processes=[],
        learning=Recipe(["method=simclr", "method.proj_hidden_dim=128", "optim.base_lr=1.0"], margin=5),
        mutations=[
            Mutation(
                "positives off by one (view 2 rolled by one image)",
                "selfsup/methods/simclr.py",
                "loss = nt_xent(z1, z2, self.temperature,",
                "loss = nt_xent(z1, z2.roll(1, 0), self.temperature,",
            ),
            Mutation(
                "temperature multiplies the logits instead of dividing",
                "selfsup/losses.py",
                "logits = anchors @ keys.T / temperature",
                "logits = anchors @ keys.T * temperature",
            ),
            Mutation(
                "embeddings not L2-normalised",
                "selfsup/losses.py",
                "anchors = F.normalize(torch.cat([z1, z2]).float(), dim=1)",
                "anchors = torch.cat([z1, z2]).float()",
            ),
            Mutation(
                "an anchor is its own negative (self-similarity not masked)",
                "selfsup/losses.py",
                'logits = logits.scatter(1, self_index[:, None], float("-inf"))',
                "logits = logits",
            ),
        ],
    ),
}
