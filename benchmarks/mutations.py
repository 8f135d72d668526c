"""The mutation check: realistic bugs planted one at a time in a scratch copy of the repository; the tests that
guard a method (`pytest -k NAME`, NAME its registry name) must fail for every one of that method's bugs.

Each mutation replaces one exact piece of source (which must occur exactly once, so a refactor that moves the
code makes the mutation fail loudly rather than silently test nothing) and names the method whose tests must
catch it. A mutation is *caught* when pytest exits 1 (a test failed); exit 0 is *missed*; anything else (no
test selected, an import error of the copy) is reported as an error. The first failing test is recorded.

    python benchmarks/mutations.py [methods=simclr,byol] [only=SUBSTRING] [jobs=1] [record=true]
    python benchmarks/mutations.py only=SUBSTRING run="python benchmarks/learning_margins.py methods=byol"

run= runs that command in the mutated copy instead of the tests and prints its output (how the learning
test's collapse bars were measured on broken runs).

Runs from the repository root with its virtual environment's python; record=true appends the table (mutation
-> catching test) to benchmarks/RESULTS.md. Rerun it when a method or a mutation is added.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@dataclass(frozen=True)
class Mutation:
    method: str  # registry name: `pytest -k method` must catch it
    bug: str  # what a developer might have written
    path: str  # file relative to the repository root
    old: str  # exact source, occurring exactly once
    new: str


M = Mutation
MUTATIONS: list[Mutation] = [
    # SimCLR
    M("simclr", "positives off by one (view 2 rolled by one image)", "selfsup/methods/simclr.py",
      "loss = nt_xent(z1, z2, self.temperature,", "loss = nt_xent(z1, z2.roll(1, 0), self.temperature,"),
    M("simclr", "temperature multiplies the logits instead of dividing", "selfsup/losses.py",
      "logits = anchors @ keys.T / temperature", "logits = anchors @ keys.T * temperature"),
    M("simclr", "embeddings not L2-normalised", "selfsup/losses.py",
      "anchors = F.normalize(torch.cat([z1, z2]).float(), dim=1)", "anchors = torch.cat([z1, z2]).float()"),
    M("simclr", "an anchor is its own negative (self-similarity not masked)", "selfsup/losses.py",
      'logits = logits.scatter(1, self_index[:, None], float("-inf"))', "logits = logits"),
    # MoCo v2
    M("moco", "key encoder never updated (its backbone left out of the momentum pairs)", "selfsup/methods/moco.py",
      "return [(self.backbone, self.key_backbone), (self.projector, self.key_projector)]",
      "return [(self.projector, self.key_projector)]"),
    M("moco", "queue never updated", "selfsup/methods/moco.py",
      "        self.queue[index] = keys\n", ""),
    M("moco", "keys from the online encoder (no momentum encoder)", "selfsup/methods/moco.py",
      "return F.normalize(self.key_projector(self.key_backbone(x)), dim=1)",
      "return F.normalize(self.projector(self.backbone(x)), dim=1).detach()"),
    M("moco", "positive logit left out of the InfoNCE logits", "selfsup/losses.py",
      "logits = torch.cat([positive, q @ queue.T], dim=1) / temperature",
      "logits = torch.cat([q @ queue.T, positive], dim=1) / temperature"),
    # MoCo v3
    M("moco_v3", "momentum encoder never updated (its backbone left out of the momentum pairs)",
      "selfsup/methods/moco_v3.py",
      "return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]",
      "return [(self.projector, self.momentum_projector)]"),
    M("moco_v3", "loss not scaled by 2T", "selfsup/losses.py",
      "return F.cross_entropy(logits, target) * 2 * temperature", "return F.cross_entropy(logits, target)"),
    M("moco_v3", "positives mismatched (query i against key i + 1)", "selfsup/losses.py",
      "target = torch.arange(q.shape[0], device=q.device) + offset",
      "target = (torch.arange(q.shape[0], device=q.device) + offset + 1) % k.shape[0]"),
    M("moco_v3", "keys from the online network (no momentum encoder)", "selfsup/methods/moco_v3.py",
      "k1, k2 = self.momentum_projector(self.momentum_backbone(x)).chunk(2)",
      "k1, k2 = self.projector(self.backbone(x)).chunk(2)"),
    # BYOL (and DirectPred/DirectCopy, which are BYOL with another predictor)
    M("byol", "no stop-gradient: the target is the online network, with gradient", "selfsup/methods/byol.py",
      "        with torch.no_grad():\n            z1, z2 = self.target_projector(self.target_backbone(x)).chunk(2)\n"
      "        # The paper's symmetrised loss: (2 - 2 cos(p1, z2)) + (2 - 2 cos(p2, z1)), eq. 2 and 3.\n"
      "        loss = 4 + 2 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))",
      "        z1, z2 = self.projector(self.backbone(x)).chunk(2)\n"
      "        cos = torch.nn.functional.cosine_similarity\n"
      "        loss = 4 - 2 * (cos(p1, z2).mean() + cos(p2, z1).mean())"),
    M("byol", "target = online network with the stop-gradient kept (no EMA target)", "selfsup/methods/byol.py",
      "z1, z2 = self.target_projector(self.target_backbone(x)).chunk(2)",
      "z1, z2 = self.projector(self.backbone(x)).chunk(2)"),
    M("byol", "EMA never updated (the target backbone left out of the momentum pairs)", "selfsup/methods/byol.py",
      "return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]",
      "return [(self.projector, self.target_projector)]"),
    M("byol", "EMA direction swapped (the online network pulled towards the target)", "selfsup/methods/base.py",
      "ema_update(target, online, momentum)", "ema_update(online, target, momentum)"),
    M("byol", "momentum schedule frozen at its base value", "selfsup/methods/momentum.py",
      "progress = min(step / max(total_steps, 1), 1.0)", "progress = 0.0"),
    M("byol", "views not swapped (p1 against z1)", "selfsup/methods/byol.py",
      "loss = 4 + 2 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))",
      "loss = 4 + 2 * (negative_cosine(p1, z1) + negative_cosine(p2, z2))"),
    M("directpred", "predictor never set from F", "selfsup/nets/predictors.py",
      "        self.weight.copy_(make(self.corr, self.eps))\n", ""),
    M("directpred", "eigenvalues not square-rooted", "selfsup/nets/predictors.py",
      "p = (s / s.max().clamp_min(torch.finfo(s.dtype).tiny)).sqrt() + eps",
      "p = (s / s.max().clamp_min(torch.finfo(s.dtype).tiny)) + eps"),
    M("directpred", "F never averaged (rho ignored)", "selfsup/nets/predictors.py",
      "rho = torch.where(self.corr_updates > 0, self.rho, 0.0)", "rho = torch.zeros(())"),
    M("directcopy", "F not normalised by its spectral norm", "selfsup/nets/predictors.py",
      "return (corr.double() / norm + eps * eye).to(corr.dtype)", "return (corr.double() + eps * eye).to(corr.dtype)"),
    M("directcopy", "eps I left out", "selfsup/nets/predictors.py",
      "return (corr.double() / norm + eps * eye).to(corr.dtype)", "return (corr.double() / norm).to(corr.dtype)"),
    M("directcopy", "EMA target never updated (the target projector left out of the momentum pairs)",
      "selfsup/methods/byol.py",
      "return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]",
      "return [(self.backbone, self.target_backbone)]"),
    # SimSiam
    M("simsiam", "stop-gradient removed from the target", "selfsup/losses.py",
      "z = F.normalize(z.detach().float(), dim=1)", "z = F.normalize(z.float(), dim=1)"),
    M("simsiam", "predictor skipped (p = z)", "selfsup/methods/simsiam.py",
      "p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)", "p1, p2 = z1, z2"),
    M("simsiam", "views not swapped (p1 against z1)", "selfsup/methods/simsiam.py",
      "loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))",
      "loss = 0.5 * (negative_cosine(p1, z1) + negative_cosine(p2, z2))"),
    # VICReg
    M("vicreg", "variance term dropped", "selfsup/methods/vicreg.py",
      'loss = sim * terms["invariance"] + var * terms["variance"] + cov * terms["covariance"]',
      'loss = sim * terms["invariance"] + cov * terms["covariance"]'),
    M("vicreg", "covariance term dropped", "selfsup/methods/vicreg.py",
      'loss = sim * terms["invariance"] + var * terms["variance"] + cov * terms["covariance"]',
      'loss = sim * terms["invariance"] + var * terms["variance"]'),
    M("vicreg", "covariance diagonal not removed", "selfsup/losses.py",
      "covariance = covariance + _off_diagonal(cov).pow(2).sum() / d",
      "covariance = covariance + cov.pow(2).sum() / d"),
    M("vicreg", "variance hinge on the variance instead of the std", "selfsup/losses.py",
      "std = torch.sqrt(z.var(dim=0) + eps)", "std = z.var(dim=0) + eps"),
    # Barlow Twins
    M("barlow", "embeddings not standardised along the batch", "selfsup/losses.py",
      "z1n, z2n = (F.batch_norm(z.float(), None, None, training=True, eps=eps) for z in (z1, z2))",
      "z1n, z2n = (z.float() for z in (z1, z2))"),
    M("barlow", "redundancy term dropped (lambda 0)", "selfsup/losses.py",
      "return on_diagonal + lambd * _off_diagonal(c).pow(2).sum()", "return on_diagonal"),
    M("barlow", "cross-correlation of a view with itself", "selfsup/losses.py",
      "c = z1n.T @ z2n / n", "c = z1n.T @ z1n / n"),
    # SwAV
    M("swav", "codes by softmax, no Sinkhorn", "selfsup/methods/swav.py",
      "codes = sinkhorn(batch, self.eps, self.iters, sum_over_processes)[: scores.shape[0]]",
      "codes = torch.softmax(batch / self.eps, dim=1)[: scores.shape[0]]"),
    M("swav", "prediction not swapped (a crop predicts its own code)", "selfsup/losses.py",
      "others = [-(q * lp).sum(dim=1).mean() for v, lp in enumerate(log_probs) if v != i]",
      "others = [-(q * lp).sum(dim=1).mean() for v, lp in enumerate(log_probs) if v == i]"),
    M("swav", "prototypes never normalised", "selfsup/methods/swav.py",
      "    def after_optimizer_step(self, step: int, total_steps: int) -> None:\n        self.normalize_prototypes()",
      "    def after_optimizer_step(self, step: int, total_steps: int) -> None:\n        pass"),
    M("swav", "prototypes never frozen", "selfsup/methods/swav.py",
      "return [self.prototypes.weight] if at.step < at.steps(self.freeze_prototypes_epochs) else []", "return []"),
    # DINO
    M("dino", "no centering", "selfsup/losses.py",
      "targets = [F.softmax((t.detach().float() - center) / teacher_temperature, dim=1) for t in teacher_out]",
      "targets = [F.softmax(t.detach().float() / teacher_temperature, dim=1) for t in teacher_out]"),
    M("dino", "teacher never updated (its backbone left out of the momentum pairs)", "selfsup/methods/dino.py",
      "return [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]",
      "return [(self.head, self.teacher_head)]"),
    M("dino", "last layer never frozen", "selfsup/methods/dino.py",
      "return list(self.head.last_layer.parameters()) if self.last_layer_frozen(schedule) else []", "return []"),
    M("dino", "centre never updated", "selfsup/methods/dino.py",
      "        self.update_center(torch.cat(teacher))\n", ""),
    M("dino", "teacher temperature schedule frozen at its warmup value", "selfsup/methods/dino.py",
      "        if at.step >= warmup:\n            return self.teacher_temperature",
      "        if False:\n            return self.teacher_temperature"),
    M("dino", "student compared with the teacher of its own crop", "selfsup/losses.py",
      "                if v != i:\n                    total = total + (-(p_t * log_p_s).sum(dim=1)).mean()",
      "                if v == i or v != i:\n                    total = total + (-(p_t * log_p_s).sum(dim=1)).mean()"),
    # MAE
    M("mae", "loss over every patch, mask not applied", "selfsup/losses.py",
      "return (per_patch * mask).sum() / mask.sum()", "return per_patch.mean()"),
    M("mae", "encoder sees every patch (the mask not applied to its input)", "selfsup/methods/mae.py",
      "visible = x[:, prefix:].gather(1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))",
      "visible = x[:, prefix:]"),
    M("mae", "targets not normalised per patch with norm_pix_loss", "selfsup/losses.py",
      "target = (target - mean) / (var + eps) ** 0.5", "target = target"),
    M("mae", "decoder position embeddings left out", "selfsup/methods/mae.py",
      ") + self.decoder_pos_embed", ")"),
    # beta-VAE
    M("beta_vae", "beta 0 (KL term dropped)", "selfsup/losses.py",
      "regulariser = kl if capacity is None else (kl - capacity).abs()", "regulariser = 0 * kl"),
    M("beta_vae", "no reparameterisation noise (z = mu while training)", "selfsup/methods/beta_vae.py",
      "z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu", "z = mu"),
    M("beta_vae", "KL sign flipped on the variance", "selfsup/losses.py",
      "kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()",
      "kl = (-0.5 * (1 + logvar - mu.pow(2) + logvar.exp()).sum(dim=1)).mean()"),
]


def scratch_copy(destination: Path) -> None:
    """The tracked and untracked, not ignored, files of the repository: what a clean checkout holds."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True, text=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def apply(mutation: Mutation, tree: Path) -> None:
    path = tree / mutation.path
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"mutation {mutation.bug!r}: its source occurs {count} times in {mutation.path}; update it")
    path.write_text(text.replace(mutation.old, mutation.new))


def run_one(mutation: Mutation, command: str | None = None) -> dict[str, object]:
    """Plant the bug in a fresh copy and run the method's tests there, or `command` (the copy's selfsup is
    imported, not the installed one: PYTHONPATH points at the copy)."""
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        tree = Path(tmp)
        scratch_copy(tree)
        apply(mutation, tree)
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        pytest = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", "0", "-k",
                  mutation.method, "-rfE", "--ignore=tests/test_mutations.py", "tests"]
        argv = pytest if command is None else [sys.executable, *shlex.split(command.removeprefix("python "))]
        done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
        if command is not None:
            print(f"## {mutation.method}: {mutation.bug}\n{done.stdout}{done.stderr[-3000:]}", flush=True)
        seconds = time.perf_counter() - start
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, flags=re.M)
    status = {0: "MISSED", 1: "caught"}.get(done.returncode, f"error (pytest exit {done.returncode})")
    return {"mutation": mutation, "status": status, "test": failed[0] if failed else "", "seconds": seconds,
            "tail": done.stdout[-2000:]}


def main(argv: list[str]) -> int:
    options = dict(arg.split("=", 1) for arg in argv)
    methods = set(options["methods"].split(",")) if "methods" in options else None
    chosen = [m for m in MUTATIONS if (methods is None or m.method in methods) and options.get("only", "") in m.bug]
    with ThreadPoolExecutor(int(options.get("jobs", 1))) as pool:
        results = list(pool.map(lambda m: run_one(m, options.get("run")), chosen))
    if "run" in options:
        return 0
    rows = []
    for r in results:
        m = r["mutation"]
        print(f"{r['status']:8} {m.method:10} {m.bug} -> {r['test'] or '-'} ({r['seconds']:.0f} s)", flush=True)
        if r["status"] != "caught":
            print(r["tail"])
        rows.append(f"| {m.method} | {m.bug} | `{m.path}` | {r['status']} | `{r['test'] or '-'}` |")
    missed = sum(r["status"] != "caught" for r in results)
    print(f"{len(results) - missed}/{len(results)} caught")
    if options.get("record") == "true":
        from results import append_section

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        header = [
            f"- command: `python benchmarks/mutations.py {' '.join(argv)}`; commit {commit}; "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; each mutation runs "
            "`pytest -x -k METHOD tests` on a scratch copy with the bug planted",
            f"- {len(results) - missed} of {len(results)} caught",
            "",
            "| method | mutation | file | result | first failing test |",
            "| --- | --- | --- | --- | --- |",
        ]
        append_section([f"\n## Mutation check: realistic bugs against each method's tests ({dt.date.today()})\n",
                        *header, *rows, ""])
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
