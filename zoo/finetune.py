"""Fine-tuning recipes, PyTorch reference: a plain loop with ``torch.optim.SGD`` (momentum).

``finetune_classifier`` trains a classifier (Video Swin, Swin) on labelled clips or images;
``finetune_mask_decoder`` trains SAM's mask decoder alone on image and prompt embeddings (the
image encoder and the prompt encoder are frozen: their outputs are the data). Both run the model
in training mode, one optimizer step per batch in the order given, and return the loss of every
step (computed before that step's update). ``ports.keras.finetune`` (``model.fit``) and
``ports.flax.finetune`` (an ``nnx.Optimizer`` loop) are the same recipes in the ports, and
``parity_tests/test_finetune.py`` shows the three give the same loss curves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.sam_transforms import DECODER_INPUTS

__all__ = ["finetune_classifier", "finetune_mask_decoder", "mask_logits"]


def finetune_classifier(
    model: nn.Module,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    steps: int,
    lr: float,
    momentum: float,
) -> list[float]:
    """``steps`` steps of SGD with momentum on the cross-entropy of the logits, each on the next
    ``batch_size`` items of ``inputs`` (N, C, T, H, W) or (N, C, H, W) channels-first, in order,
    from the start again after the last (N a multiple of ``batch_size``); ``labels`` (N,)
    integers. Returns the loss of each step."""
    if len(inputs) % batch_size:
        raise ValueError(f"{len(inputs)} items are no multiple of the batch size {batch_size}")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    model.train()
    losses = []
    for step in range(steps):
        start = step * batch_size % len(inputs)
        x = torch.from_numpy(inputs[start : start + batch_size])
        y = torch.from_numpy(labels[start : start + batch_size]).long()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def mask_logits(decoder: nn.Module, batch: Mapping[str, np.ndarray]) -> torch.Tensor:
    """The decoder's single-mask low-res logits (B, 1, 4H, 4W) for a batch of
    ``DECODER_INPUTS`` (reference layout: image_embeddings (1, C, H, W), image_pe (1, C, H, W),
    sparse_prompt_embeddings (B, N, C), dense_prompt_embeddings (B, C, H, W))."""
    masks, _ = decoder(*[torch.from_numpy(batch[k]) for k in DECODER_INPUTS], False)
    return masks


def finetune_mask_decoder(
    decoder: nn.Module,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    lr: float,
    momentum: float,
) -> list[float]:
    """SGD with momentum on SAM's mask decoder (``sam.mask_decoder``; nothing else moves): per
    batch (``DECODER_INPUTS`` and ``"masks"`` (B, 1, 4H, 4W) in {0, 1}), binary cross-entropy
    on the single-mask logits (``multimask_output=False``), averaged over every pixel. Returns
    the loss of each step."""
    optimizer = torch.optim.SGD(decoder.parameters(), lr=lr, momentum=momentum)
    decoder.train()
    losses = []
    for batch in batches:
        target = torch.from_numpy(batch["masks"])
        loss = F.binary_cross_entropy_with_logits(mask_logits(decoder, batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
