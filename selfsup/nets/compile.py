"""`trainer.compile`: torch.compile for the backbones, where nearly all of a step's FLOPs are.

Every copy of the backbone (the online network and momentum/teacher copies) is compiled in place with
`nn.Module.compile`, so state-dict keys and checkpoints stay those of the eager model. Heads, losses and
the methods' Python-side logic (queues, schedules, Sinkhorn, DirectPred's eigendecomposition) stay eager:
they are a small share of the FLOPs and would only add graph breaks and recompilations.
"""

from __future__ import annotations

from torch import nn

# torch.compile's modes; `true` means "default".
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(setting: bool | str) -> str | None:
    """trainer.compile (false | true | a mode) as a torch.compile mode, or None for eager."""
    text = str(setting).lower()
    if text == "false":
        return None
    return "default" if text == "true" else text


def compile_backbones(method: nn.Module, setting: bool | str) -> int:
    """Compile every module of `method` of its backbone's class in place; returns how many were compiled.
    Call it after the last copy or conversion of the model (a deep copy of a compiled module still calls
    the original's compiled forward)."""
    mode = compile_mode(setting)
    if mode is None:
        return 0
    kind = type(method.backbone)
    copies = [module for module in method.modules() if type(module) is kind]
    for module in copies:
        module.compile(mode=mode)
    return len(copies)
