"""Parity tolerances. Framework-free, so the CLI can quote them without importing a framework."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BLOCK_GRAD_TOLERANCE",
    "BLOCK_TOLERANCE",
    "FINETUNE_LOSS_TOLERANCE",
    "FINETUNE_OUTPUT_TOLERANCE",
    "FLOAT64_GRAD_TOLERANCE",
    "FLOAT64_TOLERANCE",
    "MIXED_BFLOAT16",
    "MIXED_BFLOAT16_GRAD_TOLERANCE",
    "MIXED_BFLOAT16_MODEL_GRAD_TOLERANCE",
    "MIXED_BFLOAT16_TOLERANCE",
    "MODEL_GRAD_TOLERANCE",
    "MODEL_TOLERANCE",
    "OPTIMIZER_ADAPTIVE_TOLERANCE",
    "OPTIMIZER_FLOAT64_TOLERANCE",
    "OPTIMIZER_SGD_TOLERANCE",
    "Tolerance",
    "finetune_weight_bound",
    "optimizer_step_tolerance",
]


@dataclass(frozen=True)
class Tolerance:
    """A tensor passes when max |port - reference| <= atol + rtol * std(reference)
    + rmax * max |reference| + rscale * scale, where ``scale`` is what the caller measures the
    whole run by (the gradient comparison: the largest gradient of the model)."""

    atol: float = 1e-5
    rtol: float = 0.0
    rmax: float = 0.0
    rscale: float = 0.0

    def bound(self, reference: np.ndarray, scale: float = 0.0) -> float:
        ref = reference.astype(np.float64) if reference.size else None
        std = float(np.std(ref)) if self.rtol and ref is not None else 0.0
        peak = float(np.max(np.abs(ref))) if self.rmax and ref is not None else 0.0
        return self.atol + self.rtol * std + self.rmax * peak + self.rscale * scale

    def describe(self) -> str:
        parts = [f"{self.atol:g}"] if self.atol else []
        if self.rtol:
            parts.append(f"{self.rtol:g} x std")
        if self.rmax:
            parts.append(f"{self.rmax:g} x max|ref|")
        if self.rscale:
            parts.append(f"{self.rscale:g} x largest gradient")
        return " + ".join(parts) or "0"


#: fp32 building blocks: max abs error <= 1e-5.
BLOCK_TOLERANCE = Tolerance(atol=1e-5)
#: fp32 whole models: max abs error <= 1e-4 x std of the reference tensor (each compared tensor).
MODEL_TOLERANCE = Tolerance(atol=0.0, rtol=1e-4)
#: fp32 gradients of a block (each input and parameter gradient):
#: max abs error <= 1e-5 x (1 + max |reference gradient|)
BLOCK_GRAD_TOLERANCE = Tolerance(atol=1e-5, rmax=1e-5)
#: fp32 gradients of a whole model: max abs error <= 1e-4 x max |reference gradient| of the
#: tensor + 1e-6 x the largest |gradient| of the model. A parameter's gradient sums over every
#: position of the batch, so its rounding grows with its magnitude and the count of positions
#: (a final norm's bias: ~5e-5 relative in float32), not with its spread (std); and a gradient
#: that cancels to zero mathematically (a key bias under softmax) is rounding noise of the size
#: of the gradients that cancel, bounded by the model's scale. float64 runs show both exact.
MODEL_GRAD_TOLERANCE = Tolerance(atol=0.0, rmax=1e-4, rscale=1e-6)
#: float64, blocks and models, forward: max abs error <= 1e-10 x max |reference| of each
#: tensor: a port that is right is exact up to float64 rounding
FLOAT64_TOLERANCE = Tolerance(atol=0.0, rmax=1e-10)
#: float64 gradients: 1e-10 x max |reference gradient| + 1e-12 x the largest gradient (a
#: gradient that cancels to zero is rounding noise of the gradients that cancel)
FLOAT64_GRAD_TOLERANCE = Tolerance(atol=0.0, rmax=1e-10, rscale=1e-12)

#: the runners' ``dtype`` for mixed precision: float32 parameters and inputs, bfloat16 compute
#: (``torch.autocast``, Keras' ``mixed_bfloat16`` policy, Flax layers' ``dtype=bfloat16``),
#: held against the float32 reference
MIXED_BFLOAT16 = "mixed_bfloat16"
#: bfloat16 compute against the float32 reference, forward, every compared tensor: max abs error
#: <= 5e-2 x max |reference| (measured worst: see the README's "Mixed precision" table)
MIXED_BFLOAT16_TOLERANCE = Tolerance(atol=0.0, rmax=5e-2)
#: bfloat16 gradients against float32 ones: 5e-2 x max |reference gradient| + 1e-2 x the
#: largest gradient of the run (a gradient that cancels to zero is noise of the gradients that
#: cancel, here at bfloat16's resolution)
MIXED_BFLOAT16_GRAD_TOLERANCE = Tolerance(atol=0.0, rmax=5e-2, rscale=1e-2)
#: bfloat16 gradients of a whole model: 5e-2 x max |reference gradient| + 0.25 x the model's
#: largest gradient. Small gradients that sum over every position through the whole backward
#: chain (the biases and norms of the first layers) are not bounded relative to themselves in
#: bfloat16: PyTorch's own autocast is up to 0.9 x their max off (measured, tiny configs), and
#: up to 0.18 x the model's largest gradient
MIXED_BFLOAT16_MODEL_GRAD_TOLERANCE = Tolerance(atol=0.0, rmax=5e-2, rscale=0.25)
#: optimizer steps (``compare_optimizer_steps``), each parameter's movement from its initial
#: weights after every step, max abs error <= rmax x max |reference movement| of the tensor.
#: fp32 SGD: the movement is linear in the gradients, whose fp32 rounding is ~1e-5 of the
#: tensor's largest (BLOCK_GRAD_TOLERANCE); measured <= 3e-5 over 10 steps.
OPTIMIZER_SGD_TOLERANCE = Tolerance(atol=0.0, rmax=1e-4)
#: fp32 AdamW / Adadelta: each element's step is its gradient normalized by its own running
#: root, so an element whose gradient is small next to its tensor's largest carries that
#: gradient's relative rounding into a full-size step; measured <= 1.3e-4 on a block whose
#: gradients have no exact zeros. A gradient that is exactly zero in exact arithmetic (an
#: attention's key bias under softmax) is rounding noise, which Adam normalizes into full steps
#: of either sign: up to 2 x lr per step apart (SwinTransformerBlock, lr 1e-3: 2.0e-3 after one
#: step, 1.3e-2 after ten, on attn.qkv.bias; exact in float64 only if eps >> the noise).
OPTIMIZER_ADAPTIVE_TOLERANCE = Tolerance(atol=0.0, rmax=1e-3)
#: float64: a right recipe is exact up to float64 rounding.
OPTIMIZER_FLOAT64_TOLERANCE = Tolerance(atol=0.0, rmax=1e-10)


def optimizer_step_tolerance(spec, dtype: str | None) -> Callable[[int], Tolerance]:
    """The tolerance after step ``t`` (the returned function's argument) of the optimizer
    ``spec`` (a ``zoo.training`` spec) in ``dtype`` (None: float32)."""
    if dtype == "float64":
        tolerance = OPTIMIZER_FLOAT64_TOLERANCE
    elif type(spec).__name__ == "SGD":
        tolerance = OPTIMIZER_SGD_TOLERANCE
    else:
        tolerance = OPTIMIZER_ADAPTIVE_TOLERANCE
    return lambda step: tolerance


#: fine-tuning (``parity_tests/test_finetune.py``), the loss of every step: max abs error <= 1e-4
#: x |reference loss|: the whole-model gradient bound (``MODEL_GRAD_TOLERANCE``'s 1e-4 x max
#: |reference|) on the scalar loss. Each step's weights carry the earlier steps' updates, each
#: within that bound; measured over 20 steps of SGD with momentum (Video Swin, SAM's mask decoder;
#: Keras on every backend, Flax): <= 1.1e-6 relative.
FINETUNE_LOSS_TOLERANCE = Tolerance(atol=0.0, rmax=1e-4)
#: the outputs of the reference holding fine-tuned weights against the fine-tuned reference's:
#: the whole-model forward bound (1e-4 x std). Measured: <= 4.5e-6 x std.
FINETUNE_OUTPUT_TOLERANCE = MODEL_TOLERANCE


def finetune_weight_bound(
    moved: np.ndarray, weight: np.ndarray, largest_move: float, steps: int
) -> float:
    """The max abs error allowed on a fine-tuned tensor (``weight``, the reference's after
    ``steps`` optimizer steps; ``moved``, how far the reference moved it; ``largest_move``, the
    model's largest move): 1e-4 x max |moved| + 1e-6 x steps x largest_move + steps x 2^-24 x
    max |weight|. The gradient bound carried to the distance moved (its 1e-4 relative term, and
    its model-scale term once per step), plus the float32 rounding of the weight itself, which
    every update rounds to its grid (half an ulp, 2^-24 relative, per step). A tensor the loss
    does not reach comes back exact. Measured (20 steps): the errors are one ulp of the weights,
    <= 5% of the bound."""
    peak = float(np.max(np.abs(weight))) if weight.size else 0.0
    move = float(np.max(np.abs(moved))) if moved.size else 0.0
    return 1e-4 * move + 1e-6 * steps * largest_move + steps * 2.0**-24 * peak
