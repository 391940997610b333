"""Training-step benchmark, beside ``scripts/benchmark.py``'s forward pass: one full step
(forward, loss, backward, AdamW update) of Swin-T (batch 8, 3 x 224 x 224, 1000 classes), Video
Swin-T (batch 1, 3 x 16 x 224 x 224, 400 classes) and SAM ViT-B's mask decoder fine-tuned on
precomputed image embeddings, in every implementation.

    python scripts/benchmark_train.py --impl flax --model swin_t [--smoke] [--repeats 3]

``train_fn(impl, model, smoke)`` builds the model and the data once and returns a callable that
runs one step and returns that step's loss (computed before the update), the result ready
(``.block_until_ready()`` on JAX, a float from Keras's ``train_on_batch``, nothing to wait for in
eager PyTorch on CPU), or None where the implementation has no such model; ``benchmark.py
--train`` runs it one process per implementation (one Keras backend per process), as for the
forward pass. ``smoke=True`` takes the family's tiny config (``Family.tiny``) and small inputs,
every implementation built from the same fields, to check each path in seconds.

The same step everywhere: ``zoo.training.AdamW(lr=1e-4, weight_decay=0.05)`` through
``torch_optimizer`` / ``keras_optimizer`` / ``nnx_optimizer``; fp32, random weights, training
mode; random inputs and integer labels from ``np.random.default_rng(0)``.

- classifiers: mean cross-entropy of the logits. Training mode as each builder's defaults have
  it: Swin-T drop path 0.2 (reference, ports, torchvision ``swin_t``), 0.1 in timm (its
  ``SwinTransformer``'s default ``drop_path_rate``), no dropout; Video Swin-T drop path 0.1 and
  head dropout 0.5 (reference, ports), drop path 0.1 and no head dropout in torchvision
  ``swin3d_t``.
- ``sam_mask_decoder``: SAM ViT-B's decoder (two-way transformer, 256 wide) alone, on a random
  image embedding (1, 256, 64, 64) with the prompt encoder's dense positional encoding and 8
  random box prompts, embedded once by the (frozen) prompt encoder outside the step: sparse (8,
  2, 256), dense (8, 256, 64, 64); ``multimask_output=False``. Loss: mean BCE-with-logits of the
  low-res masks (8, 1, 256, 256) against a random binary target plus the mean squared error of
  the IoU prediction against a random target. The decoder has no dropout. Only its parameters
  train, all of them in every implementation: the three multimask hypernetworks' outputs are
  computed and sliced off, so their gradients are zeros (not None) and AdamW still decays them.

How each step is compiled:

- PyTorch (torchvision, timm, segment-anything, reference): eager. ``reference-compile``:
  ``torch.compile`` of the reference module (default mode: Dynamo + Inductor; AOTAutograd
  compiles its forward and backward); the loss and ``optimizer.step()`` stay eager.
- Keras: ``model.compile(..., jit_compile=True)`` then ``train_on_batch``: one XLA-compiled
  ``tf.function`` on TensorFlow (``"auto"`` would leave XLA off on a CPU-only machine), one
  ``jax.jit`` train step on JAX. The SAM decoder is wrapped in a ``keras.Model`` with two outputs
  (masks, IoU) and two losses (``BinaryCrossentropy(from_logits=True)``, ``MeanSquaredError``).
- Flax: ``model.train()``, then an ``nnx.jit`` step with ``nnx.value_and_grad`` and
  ``optimizer.update(model, grads)`` (``ports.flax.finetune``'s classifier step for the
  classifiers), called through ``nnx.cached_partial`` (Flax's advice for training loops: the
  graph of the model and optimizer is not traversed again on every call).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zoo.families.sam import mask_decoder_arguments, prompt_encoder_arguments  # noqa: E402
from zoo.tensor_format import Format, to_port_format  # noqa: E402
from zoo.training import AdamW  # noqa: E402

OPTIMIZER = AdamW(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)


class TrainModel(NamedTuple):
    variant: str  # zoo variant (full size); smoke runs take its family's tiny config
    shape: tuple[int, ...]  # reference input (channels-first); SAM: (boxes,)
    smoke_shape: tuple[int, ...]
    torchvision: str | None
    timm: str | None


TRAIN_MODELS: dict[str, TrainModel] = {
    "swin_t": TrainModel(
        "swin_tiny_patch4_window7_224",
        (8, 3, 224, 224),
        (2, 3, 56, 56),
        "swin_t",
        "swin_tiny_patch4_window7_224",
    ),
    "video_swin_t": TrainModel(
        "video_swin_tiny", (1, 3, 16, 224, 224), (1, 3, 4, 56, 56), "swin3d_t", None
    ),
    "sam_mask_decoder": TrainModel("sam_vit_b", (8,), (2,), None, None),
}
TRAIN_IMPLS = [
    "torchvision",
    "timm",
    "segment-anything",
    "reference",
    "reference-compile",
    "keras-tensorflow",
    "keras-jax",
    "flax",
]


def _config(model: str, smoke: bool):
    from zoo.configs import family_of
    from zoo.registry import VARIANTS

    config = VARIANTS[TRAIN_MODELS[model].variant].config
    return family_of(config).tiny if smoke else config


def _classifier_data(model: str, smoke: bool, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (channels-first) and integer labels, the same in every framework."""
    spec = TRAIN_MODELS[model]
    shape = spec.smoke_shape if smoke else spec.shape
    rng = np.random.default_rng(0)
    return rng.standard_normal(shape, np.float32), rng.integers(0, classes, shape[0])


def _sam_data(config, boxes: int) -> dict[str, np.ndarray]:
    """Reference layout: a random image embedding (1, C, g, g), ``boxes`` random boxes (pixel
    x0, y0, x1, y1), the mask target (boxes, 1, 4g, 4g) in {0, 1}, the IoU target (boxes, 1)."""
    rng = np.random.default_rng(0)
    c, g, size = config.prompt_embed_dim, config.image_embedding_size, config.img_size
    corners = np.sort(rng.uniform(0, size, (boxes, 2, 2)), axis=1)  # sorted: x0 < x1, y0 < y1
    return {
        "embeddings": rng.standard_normal((1, c, g, g), np.float32),
        "boxes": corners.reshape(boxes, 4).astype(np.float32),
        "masks": (rng.random((boxes, 1, 4 * g, 4 * g)) < 0.5).astype(np.float32),
        "iou": rng.random((boxes, 1), np.float32),
    }


# --------------------------------------------------------------------------- PyTorch


def _torch_classifier(impl: str, model: str, smoke: bool):
    spec, config = TRAIN_MODELS[model], _config(model, smoke)
    video = len(spec.shape) == 5
    if impl == "torchvision":
        if spec.torchvision is None:
            return None
        import torchvision

        if not smoke:
            ns = torchvision.models.video if video else torchvision.models
            return getattr(ns, spec.torchvision)()
        cls = (
            torchvision.models.video.SwinTransformer3d
            if video
            else torchvision.models.SwinTransformer
        )
        return cls(
            patch_size=list(config.patch_size),
            embed_dim=config.embed_dim,
            depths=list(config.depths),
            num_heads=list(config.num_heads),
            window_size=list(config.window_size),
            stochastic_depth_prob=config.drop_path_rate,
            num_classes=config.num_classes,
        )
    if impl == "timm":
        if spec.timm is None:
            return None
        import timm

        tiny = {
            "embed_dim": config.embed_dim,
            "depths": config.depths,
            "num_heads": config.num_heads,
            "num_classes": config.num_classes,
            "img_size": spec.smoke_shape[-1],
        }
        return timm.create_model(spec.timm, pretrained=False, **(tiny if smoke else {}))
    if impl not in ("reference", "reference-compile"):
        return None
    from zoo.models import create_model

    return create_model(config)


def _torch_sam(impl: str, config):
    if impl == "segment-anything":
        from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

        c = config.prompt_embed_dim
        transformer = TwoWayTransformer(
            depth=config.transformer_depth,
            embedding_dim=c,
            num_heads=config.transformer_num_heads,
            mlp_dim=config.transformer_mlp_dim,
            attention_downsample_rate=config.attention_downsample_rate,
        )
        decoder = MaskDecoder(
            transformer_dim=c,
            transformer=transformer,
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        )
        return PromptEncoder(**prompt_encoder_arguments(config)), decoder
    if impl in ("reference", "reference-compile"):
        from zoo.models.sam import build_mask_decoder, build_prompt_encoder

        return build_prompt_encoder(config), build_mask_decoder(config)
    return None


def _torch_fn(impl: str, model: str, smoke: bool, device: str, dtype: str):
    import torch
    import torch.nn.functional as F

    from scripts.bench_device import torch_autocast, torch_device, torch_sync
    from zoo.training import torch_optimizer

    dev = torch_device(device)
    torch.manual_seed(0)
    if model == "sam_mask_decoder":
        config = _config(model, smoke)
        parts = _torch_sam(impl, config)  # after the seed: the same weights every run
        if parts is None:
            return None
        prompt, module = parts
        prompt.to(dev)
        data = _sam_data(config, _boxes(model, smoke))
        data = {k: torch.from_numpy(v).to(dev) for k, v in data.items()}
        with torch.no_grad():
            sparse, dense = prompt(None, data["boxes"], None)
            inputs = (data["embeddings"], prompt.get_dense_pe(), sparse, dense)

        def loss_of(net):
            with torch_autocast(dev, dtype):
                masks, iou = net(*inputs, False)
                return F.binary_cross_entropy_with_logits(masks, data["masks"]) + F.mse_loss(
                    iou, data["iou"]
                )
    else:
        module = _torch_classifier(impl, model, smoke)
        if module is None:
            return None
        x, y = _classifier_data(model, smoke, _config(model, smoke).num_classes)
        x, y = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)

        def loss_of(net):
            with torch_autocast(dev, dtype):
                return F.cross_entropy(net(x), y)

    module.train().to(dev)
    optimizer = torch_optimizer(OPTIMIZER, module.parameters())
    net = torch.compile(module) if impl == "reference-compile" else module

    def step():
        loss = loss_of(net)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        torch_sync(dev)
        return loss.detach()

    return step


def _boxes(model: str, smoke: bool) -> int:
    spec = TRAIN_MODELS[model]
    return (spec.smoke_shape if smoke else spec.shape)[0]


# --------------------------------------------------------------------------- Keras


def _keras_fn(model: str, smoke: bool, dtype: str):
    import keras

    from scripts.bench_device import KERAS_POLICY

    keras.config.set_dtype_policy(KERAS_POLICY[dtype])
    config = _config(model, smoke)
    if model == "sam_mask_decoder":
        from ports.keras.models.sam_mask_decoder import MaskDecoder
        from ports.keras.models.sam_prompt_encoder import PromptEncoder

        keras.utils.set_random_seed(0)
        prompt = PromptEncoder(**prompt_encoder_arguments(config), name="prompt_encoder")
        decoder = MaskDecoder(**mask_decoder_arguments(config), name="mask_decoder")
        prompt.build()
        decoder.build()
        data = _sam_data(config, _boxes(model, smoke))
        sparse, dense = prompt(None, keras.ops.convert_to_tensor(data["boxes"]), None)
        embeddings = to_port_format(data["embeddings"], Format.CHANNELS_FIRST)
        x = {
            "image_embeddings": keras.ops.convert_to_tensor(embeddings),
            "image_pe": prompt.get_dense_pe(),
            "sparse_prompt_embeddings": sparse,
            "dense_prompt_embeddings": dense,
        }
        y = (
            keras.ops.convert_to_tensor(to_port_format(data["masks"], Format.CHANNELS_FIRST)),
            keras.ops.convert_to_tensor(data["iou"]),
        )
        net = _keras_decoder_class()(decoder)
        loss = [
            keras.losses.BinaryCrossentropy(from_logits=True),
            keras.losses.MeanSquaredError(),
        ]
    else:
        from ports.keras.models import create_model

        keras.utils.set_random_seed(0)
        net = create_model(config)
        x, labels = _classifier_data(model, smoke, config.num_classes)
        x = keras.ops.convert_to_tensor(to_port_format(x, Format.CHANNELS_FIRST))
        y = keras.ops.convert_to_tensor(labels.astype(np.int32))
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    from ports.keras.training import keras_optimizer

    net.compile(optimizer=keras_optimizer(OPTIMIZER), loss=loss, jit_compile=True)
    if net.jit_compile is not True:
        raise SystemExit(f"Keras left jit_compile off on {keras.backend.backend()}")
    return lambda: net.train_on_batch(x, y, return_dict=True)["loss"]


def _keras_decoder_class():
    """Defined on call: only the Keras runs import Keras."""
    import keras

    from zoo.sam_transforms import DECODER_INPUTS

    class KerasDecoder(keras.Model):
        """SAM's mask decoder for ``train_on_batch``: a dict of ``DECODER_INPUTS``
        (channels-last) -> the single-mask low-res logits (B, 4H, 4W, 1) and IoU (B, 1)."""

        def __init__(self, mask_decoder: keras.Layer, **kwargs) -> None:
            super().__init__(**kwargs)
            self.mask_decoder = mask_decoder

        def call(self, inputs, training=None):
            return self.mask_decoder(
                *[inputs[k] for k in DECODER_INPUTS], multimask_output=False, training=training
            )

    return KerasDecoder


# --------------------------------------------------------------------------- Flax


def _flax_fn(model: str, smoke: bool, dtype: str):
    import jax.numpy as jnp
    from flax import nnx

    from ports.flax.layers.variables import set_compute_dtype
    from ports.flax.training import nnx_optimizer
    from scripts.bench_device import flax_compute_dtype

    config = _config(model, smoke)
    compute_dtype = flax_compute_dtype(dtype)
    if model == "sam_mask_decoder":
        import optax

        from ports.flax.models.sam_mask_decoder import MaskDecoder
        from ports.flax.models.sam_prompt_encoder import PromptEncoder

        rngs = nnx.Rngs(0)
        prompt = PromptEncoder(**prompt_encoder_arguments(config), rngs=rngs)
        net = MaskDecoder(**mask_decoder_arguments(config), rngs=rngs)
        if compute_dtype is not None:
            set_compute_dtype(net, compute_dtype)
        data = _sam_data(config, _boxes(model, smoke))
        sparse, dense = prompt(None, jnp.asarray(data["boxes"]), None)
        inputs = (
            jnp.asarray(to_port_format(data["embeddings"], Format.CHANNELS_FIRST)),
            prompt.get_dense_pe(),
            sparse,
            dense,
        )
        masks = jnp.asarray(to_port_format(data["masks"], Format.CHANNELS_FIRST))
        iou = jnp.asarray(data["iou"])

        @nnx.jit
        def train_step(net, optimizer, inputs, masks, iou):
            def loss_fn(net):
                logits, iou_pred = net(*inputs, False)
                bce = optax.sigmoid_binary_cross_entropy(logits, masks).mean()
                return bce + ((iou_pred - iou) ** 2).mean()

            loss, grads = nnx.value_and_grad(loss_fn)(net)
            optimizer.update(net, grads)
            return loss

        args = (inputs, masks, iou)
    else:
        from ports.flax.finetune import _classifier_step as train_step
        from ports.flax.models import create_model

        net = create_model(config, rngs=nnx.Rngs(0), dtype=compute_dtype)
        x, labels = _classifier_data(model, smoke, config.num_classes)
        args = (jnp.asarray(to_port_format(x, Format.CHANNELS_FIRST)), jnp.asarray(labels))
    net.train()
    # the model and optimizer graph traversed once, not on every call (~7 ms a step on CPU)
    step = nnx.cached_partial(train_step, net, nnx_optimizer(net, OPTIMIZER))
    return lambda: step(*args).block_until_ready()


# --------------------------------------------------------------------------- entry points


def train_fn(
    impl: str, model: str, smoke: bool = False, device: str = "cpu", dtype: str = "float32"
) -> Callable[[], Any] | None:
    """A callable running one training step of ``model`` in ``impl`` (returns the step's loss,
    computed), or None where ``impl`` has no ``model``. Build cost is paid here, compilation on
    the first call. Keras: set ``KERAS_BACKEND`` to the impl's backend before importing Keras.
    ``device`` and ``dtype`` as ``scripts/bench_device.py`` says (JAX and TensorFlow pick the
    device from the process's environment, ``bench_device.worker_env``)."""
    if impl not in TRAIN_IMPLS or model not in TRAIN_MODELS:
        raise ValueError(f"unknown implementation or model: {impl!r}, {model!r}")
    if impl.startswith("keras-"):
        import keras

        backend = impl.removeprefix("keras-")
        if keras.backend.backend() != backend:
            raise SystemExit(f"{impl} needs KERAS_BACKEND={backend}, not {keras.backend.backend()}")
        return _keras_fn(model, smoke, dtype)
    if impl == "flax":
        return _flax_fn(model, smoke, dtype)
    return _torch_fn(impl, model, smoke, device, dtype)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", required=True, choices=TRAIN_IMPLS)
    parser.add_argument("--model", required=True, choices=list(TRAIN_MODELS))
    parser.add_argument("--smoke", action="store_true", help="tiny configs and inputs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.impl.startswith("keras-"):
        import os

        os.environ["KERAS_BACKEND"] = args.impl.removeprefix("keras-")
    fn = train_fn(args.impl, args.model, args.smoke)
    if fn is None:
        print(f"{args.impl} has no {args.model}")
        return 0
    start = time.perf_counter()
    losses = [float(fn())]  # the first step compiles
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        losses.append(float(fn()))
        times.append(time.perf_counter() - start)
    print(
        f"{args.model} {args.impl}{' (smoke)' if args.smoke else ''}: "
        f"{statistics.median(times):.4f} s/step (median of {args.repeats}), "
        f"first step {first:.2f} s; losses {' '.join(f'{v:.4f}' for v in losses)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
