"""Fine-tuning recipes, Keras 3 (any backend): ``model.compile`` + ``model.fit`` with
``keras.optimizers.SGD`` (momentum), the ports' version of ``zoo.finetune``.

``fit_classifier`` trains a classifier (Video Swin, Swin) on labelled clips or images;
``fit_mask_decoder`` trains SAM's mask decoder alone on image and prompt embeddings, through
``MaskDecoderModel`` (the decoder as a ``keras.Model`` whose input is a dict). Keras logs the
mean loss of the epoch so far; the recipes fit one batch per epoch (``epochs=steps,
steps_per_epoch=1``: the data is rewound only once every batch has been taken, so epoch k
takes batch k) and
``StepLosses`` records each step's own loss. ``keras.optimizers.SGD(lr, momentum)`` keeps
``m = momentum * m - lr * g`` and adds ``m``, which is ``torch.optim.SGD``'s update
(``v = momentum * v + g``, minus ``lr * v``) for a constant learning rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np

from zoo.sam_transforms import DECODER_INPUTS

__all__ = [
    "MaskDecoderModel",
    "StepLosses",
    "fit_classifier",
    "fit_mask_decoder",
]


class StepLosses(keras.callbacks.Callback):
    """The loss of every training step (``self.losses``). ``logs["loss"]`` is the mean over the
    epoch so far, so step k of an epoch is ``(k + 1) * mean_k - k * mean_(k-1)``: exact for the
    first step of an epoch (the recipes fit one step per epoch), a few float32 roundings of the
    epoch's total off for the others."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []
        self._mean = 0.0

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        mean = float(logs["loss"])
        self.losses.append((batch + 1) * mean - batch * self._mean if batch else mean)
        self._mean = mean


def fit_classifier(
    model: keras.Model,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    steps: int,
    lr: float,
    momentum: float,
) -> list[float]:
    """``steps`` steps of SGD with momentum on the cross-entropy of the logits, each on the next
    ``batch_size`` items of ``inputs`` (N, T, H, W, C) or (N, H, W, C) channels-last, in order,
    from the start again after the last (N a multiple of ``batch_size``: ``fit`` rewinds the
    data once it has taken every batch); ``labels`` (N,) integers. Returns the loss of each
    step."""
    if len(inputs) % batch_size:
        raise ValueError(f"{len(inputs)} items are no multiple of the batch size {batch_size}")
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    losses = StepLosses()
    model.fit(
        inputs,
        labels,
        batch_size=batch_size,
        epochs=steps,
        steps_per_epoch=1,
        shuffle=False,
        callbacks=[losses],
        verbose=0,
    )
    return losses.losses


class MaskDecoderModel(keras.Model):
    """SAM's mask decoder as a ``keras.Model`` for ``fit``: the input is a dict of
    ``DECODER_INPUTS`` (image_embeddings (1, H, W, C), image_pe (1, H, W, C),
    sparse_prompt_embeddings (B, N, C), dense_prompt_embeddings (B, H, W, C)), the output the
    single-mask low-res logits (B, 4H, 4W, 1). It holds the decoder itself (``sam.mask_decoder``):
    training it trains the ``Sam`` model's variables, and ``sam.save`` writes them."""

    def __init__(self, mask_decoder: keras.Layer, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mask_decoder = mask_decoder

    def call(self, inputs: Mapping, training: bool | None = None):
        masks, _ = self.mask_decoder(
            *[inputs[k] for k in DECODER_INPUTS], multimask_output=False, training=training
        )
        return masks


class _Batches(keras.utils.PyDataset):
    """Prepared batches as they are (the image embedding has one item, the prompts B): ``fit``
    slices nothing."""

    def __init__(self, batches: Sequence[Mapping[str, np.ndarray]]) -> None:
        super().__init__()
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        batch = self.batches[i]
        return {k: batch[k] for k in DECODER_INPUTS}, batch["masks"]


def fit_mask_decoder(
    mask_decoder: keras.Layer,
    batches: Sequence[Mapping[str, np.ndarray]],
    *,
    lr: float,
    momentum: float,
) -> list[float]:
    """SGD with momentum on SAM's mask decoder (``sam.mask_decoder``; nothing else moves): per
    batch (``DECODER_INPUTS`` and ``"masks"`` (B, 4H, 4W, 1) in {0, 1}, channels-last), binary
    cross-entropy on the single-mask logits, averaged over every pixel. Returns the loss of each
    step."""
    model = MaskDecoderModel(mask_decoder)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=momentum),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    losses = StepLosses()
    # the mask loss does not reach the IoU head: frozen for the duration (it would not move
    # anyway; Keras warns of variables without gradients)
    head = mask_decoder.iou_prediction_head
    trainable, head.trainable = head.trainable, False
    try:
        model.fit(
            _Batches(batches),
            epochs=len(batches),
            steps_per_epoch=1,
            shuffle=False,
            callbacks=[losses],
            verbose=0,
        )
    finally:
        head.trainable = trainable
    return losses.losses
