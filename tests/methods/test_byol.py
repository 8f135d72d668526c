"""byol, directpred, directcopy: the entry of the registry-wide tests (tests/method_specs.py)."""

from __future__ import annotations

from tests.method_specs import MethodSpec, Mutation, OptOut, Recipe

SPECS = {
    "byol": MethodSpec(
        momentum_targets=True,
        tiny=["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.predictor.hidden_dim=32"],
        two_processes=[],
        learning=Recipe(
            [
                "method=byol",
                "method.proj_hidden_dim=128",
                "method.predictor.hidden_dim=128",
                "optim=sgd",
                "optim.base_lr=1.0",
            ],
            margin=4,
        ),
        mutations=[
            Mutation(
                "no stop-gradient: the target is the online network, with gradient",
                "selfsup/methods/byol.py",
                "        with torch.no_grad():\n"
                "            z1, z2 = self.target_projector(self.target_backbone(x)).chunk(2)\n"
                "        # The paper's symmetrised loss: (2 - 2 cos(p1, z2)) + (2 - 2 cos(p2, z1)), eq. 2 and 3.\n"
                "        loss = 4 + 2 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))",
                "        z1, z2 = self.projector(self.backbone(x)).chunk(2)\n"
                "        cos = torch.nn.functional.cosine_similarity\n"
                "        loss = 4 - 2 * (cos(p1, z2).mean() + cos(p2, z1).mean())",
            ),
            Mutation(
                "target = online network with the stop-gradient kept (no EMA target)",
                "selfsup/methods/byol.py",
                "z1, z2 = self.target_projector(self.target_backbone(x)).chunk(2)",
                "z1, z2 = self.projector(self.backbone(x)).chunk(2)",
            ),
            Mutation(
                "EMA never updated (the target backbone left out of the momentum pairs)",
                "selfsup/methods/byol.py",
                "return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]",
                "return [(self.projector, self.target_projector)]",
            ),
            Mutation(
                "EMA direction swapped (the online network pulled towards the target)",
                "selfsup/methods/base.py",
                "ema_update(target, online, momentum)",
                "ema_update(online, target, momentum)",
            ),
            Mutation(
                "momentum schedule frozen at its base value",
                "selfsup/methods/momentum.py",
                "progress = min(step / max(total_steps, 1), 1.0)",
                "progress = 0.0",
            ),
            Mutation(
                "views not swapped (p1 against z1)",
                "selfsup/methods/byol.py",
                "loss = 4 + 2 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))",
                "loss = 4 + 2 * (negative_cosine(p1, z1) + negative_cosine(p2, z2))",
            ),
        ],
    ),
    "directpred": MethodSpec(
        momentum_targets=True,
        tiny=["method.proj_hidden_dim=32", "method.proj_output_dim=16"],
        two_processes=[],
        learning=Recipe(
            [
                "method=directpred",
                "method.proj_hidden_dim=128",
                "method.predictor.hidden_dim=128",
                "optim=sgd",
                "optim.base_lr=1.0",
            ],
            margin=5,
        ),
        mutations=[
            Mutation(
                "predictor never set from F",
                "selfsup/nets/predictors.py",
                "        self.weight.copy_(make(self.corr, self.eps))\n",
                "",
            ),
            Mutation(
                "eigenvalues not square-rooted",
                "selfsup/nets/predictors.py",
                "p = (s / s.max().clamp_min(torch.finfo(s.dtype).tiny)).sqrt() + eps",
                "p = (s / s.max().clamp_min(torch.finfo(s.dtype).tiny)) + eps",
            ),
            Mutation(
                "F never averaged (rho ignored)",
                "selfsup/nets/predictors.py",
                "rho = torch.where(self.corr_updates > 0, self.rho, 0.0)",
                "rho = torch.zeros(())",
            ),
        ],
    ),
    "directcopy": MethodSpec(
        momentum_targets=True,
        tiny=["method.proj_hidden_dim=32", "method.proj_output_dim=16"],
        two_processes=OptOut(
            "DirectCopy is DirectPred's predictor (F from the batch's correlation) with another normalisation;"
            " directpred's two-process case covers the F every process must share"
        ),
        learning=Recipe(
            [
                "method=directcopy",
                "method.proj_hidden_dim=128",
                "method.predictor.hidden_dim=128",
                "optim=sgd",
                "optim.base_lr=1.0",
                "method.predictor.eps=0.3",
            ],
            margin=4,
        ),
        mutations=[
            Mutation(
                "F not normalised by its spectral norm",
                "selfsup/nets/predictors.py",
                "return (corr.double() / norm + eps * eye).to(corr.dtype)",
                "return (corr.double() + eps * eye).to(corr.dtype)",
            ),
            Mutation(
                "eps I left out",
                "selfsup/nets/predictors.py",
                "return (corr.double() / norm + eps * eye).to(corr.dtype)",
                "return (corr.double() / norm).to(corr.dtype)",
            ),
            Mutation(
                "EMA target never updated (the target projector left out of the momentum pairs)",
                "selfsup/methods/byol.py",
                "return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]",
                "return [(self.backbone, self.target_backbone)]",
            ),
        ],
    ),
}
