"""Captioner checkpoint layout, and the tutorial's two files as one.

``tutorial``
    yunjey/pytorch-tutorial ``image_captioning``: ``train.py`` saves ``encoder.state_dict()``
    and ``decoder.state_dict()`` as two files (``encoder-5-3000.ckpt``, ``decoder-5-3000.ckpt``).
    The converter reads one state dict: the two under ``encoder.`` / ``decoder.`` (the
    reference's keys: ``encoder.resnet.4.0.conv1.weight``, ``encoder.bn.running_var``,
    ``decoder.lstm.weight_ih_l0``), which ``combine_tutorial_files`` writes from the two files
    (read with the converter's own safe reader, never unpickled by torch) and
    ``split_tutorial_state`` splits back into the two state dicts the tutorial's ``sample.py``
    loads. The LSTM tensors keep PyTorch's layout in every port (``zoo.layers.rnn``): no rule.

The architecture is solved from the shapes: the ResNet's from ``encoder.resnet.*`` as the ResNet
layouts solve it (``resnet.4`` is ``layer1``, ...), ``embed_size`` / ``vocab_size`` from
``decoder.embed.weight``, ``hidden_size`` from ``weight_hh_l0``, ``num_layers`` from the
``weight_ih_l{k}`` present.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from weight_convert.errors import LayoutError
from weight_convert.layouts._registry import LayoutSpec, register_layouts
from weight_convert.layouts._vit import need
from weight_convert.layouts.resnet import _infer_resnet
from zoo.families.captioner import RESNET_ITEMS, CaptionerConfig

__all__ = ["combine_tutorial_files", "lstm_from_keras", "lstm_to_keras", "split_tutorial_state"]

_RESNET = re.compile(r"encoder\.resnet\.(\d+)\.(.*)")
_LAYER = re.compile(r"decoder\.lstm\.weight_ih_l(\d+)$")
HALVES = ("encoder", "decoder")


def _resnet_view(reference: Mapping[str, Any]) -> dict[str, Any]:
    """``encoder.resnet.N.*`` as the ResNet's own keys (``resnet.4.0.conv1`` -> ``layer1.0
    .conv1``), with an ``fc`` of one class for the ResNet solver."""
    out: dict[str, Any] = {}
    for key, value in reference.items():
        m = _RESNET.match(key)
        if m:
            index = int(m.group(1))
            if index >= len(RESNET_ITEMS):
                raise LayoutError(f"{key}: the encoder's resnet has no item {index} with weights")
            out[f"{RESNET_ITEMS[index]}.{m.group(2)}"] = value
    linear = tuple(need(reference, "encoder.linear.weight").shape)
    out["fc.weight"] = np.zeros((1, linear[1]), np.float32)
    return out


def _infer_captioner(reference: Mapping[str, Any]) -> tuple[CaptionerConfig, list[str]]:
    resnet, _ = _infer_resnet(_resnet_view(reference))
    embed_out, features = (int(s) for s in need(reference, "encoder.linear.weight").shape)
    if features != resnet.num_features:
        raise LayoutError(
            f"encoder.linear takes {features} features but the ResNet gives {resnet.num_features}"
        )
    vocab, embed = (int(s) for s in need(reference, "decoder.embed.weight").shape)
    if embed != embed_out:
        raise LayoutError(f"encoder.linear gives {embed_out} features but embed is {embed} wide")
    hidden = int(need(reference, "decoder.lstm.weight_hh_l0").shape[1])
    layers = sorted(int(m.group(1)) for k in reference if (m := _LAYER.match(k)))
    if layers != list(range(len(layers))):
        raise LayoutError(f"the LSTM's layers are not numbered 0..n-1: {layers}")
    config = CaptionerConfig(
        block=resnet.block,
        layers=resnet.layers,
        planes=resnet.planes,
        in_chans=resnet.in_chans,
        embed_size=embed,
        hidden_size=hidden,
        vocab_size=vocab,
        num_layers=len(layers),
    )
    return config, []


register_layouts(
    "captioner",
    _infer_captioner,
    [
        LayoutSpec(
            "tutorial",
            "captioner",
            (("encoder.", "encoder."), ("decoder.", "decoder.")),
            notes=(
                "the tutorial saves encoder and decoder as two files: "
                "weight_convert.layouts.captioner.combine_tutorial_files joins them",
            ),
        )
    ],
)


def combine_tutorial_files(
    encoder: str | os.PathLike, decoder: str | os.PathLike, out: str | os.PathLike
) -> str:
    """Write the tutorial's ``encoder-*.ckpt`` and ``decoder-*.ckpt`` as one ``.pth`` the
    converter reads (``encoder.`` / ``decoder.`` prefixes). Each file is read by the converter's
    reader (bounded, no code run); a file whose keys already carry a prefix, or an empty one,
    is refused (``LayoutError``)."""
    import torch

    from weight_convert import checkpoints

    combined: dict[str, Any] = {}
    for half, path in zip(HALVES, (encoder, decoder), strict=True):
        tensors, _ = checkpoints.load_state_dict(path)
        if not tensors:
            raise LayoutError(f"{path}: no tensors for the {half}")
        prefixed = [k for k in tensors if k.startswith(tuple(h + "." for h in HALVES))]
        if prefixed:
            raise LayoutError(f"{path}: keys already prefixed ({prefixed[0]}): not a {half} file")
        combined.update({f"{half}.{k}": torch.from_numpy(np.array(v)) for k, v in tensors.items()})
    torch.save(combined, out)
    return str(out)


def split_tutorial_state(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A combined state dict as the tutorial's two (``EncoderCNN``'s, ``DecoderRNN``'s), the
    prefixes dropped; a key under neither is ``LayoutError``."""
    halves: dict[str, dict[str, Any]] = {h: {} for h in HALVES}
    for key, value in state.items():
        half, _, rest = key.partition(".")
        if half not in halves or not rest:
            raise LayoutError(f"{key} is neither the encoder's nor the decoder's")
        halves[half][rest] = value
    return halves["encoder"], halves["decoder"]


def lstm_to_keras(
    weight_ih: np.ndarray, weight_hh: np.ndarray, bias_ih: np.ndarray, bias_hh: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One PyTorch LSTM layer as ``keras.layers.LSTM``'s ``kernel`` (in, 4H), ``recurrent_kernel``
    (H, 4H), ``bias`` (4H,): the transposes and the two biases summed. The gate order is the
    same (PyTorch i, f, g, o; Keras i, f, c, o), so no column is permuted. The zoo's ports keep
    PyTorch's four tensors instead (``zoo.layers.rnn``); this is for a user's own Keras LSTM."""
    for name, w in (("weight_ih", weight_ih), ("weight_hh", weight_hh)):
        if w.ndim != 2 or w.shape[0] % 4:
            raise LayoutError(f"{name} of shape {w.shape} is no (4H, in) LSTM weight")
    h = weight_hh.shape[1]
    shapes = (weight_hh.shape, bias_ih.shape, bias_hh.shape)
    if shapes != ((4 * h, h), (4 * h,), (4 * h,)) or weight_ih.shape[0] != 4 * h:
        raise LayoutError(f"LSTM tensors of shapes {weight_ih.shape}, {shapes}: not one layer")
    return weight_ih.T.copy(), weight_hh.T.copy(), bias_ih + bias_hh


def lstm_from_keras(
    kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``keras.layers.LSTM``'s three tensors as PyTorch's four: the sum cannot be split back, so
    ``bias_ih`` gets Keras's whole bias and ``bias_hh`` zeros (the same LSTM; not the tensors a
    PyTorch checkpoint converted to Keras had)."""
    return kernel.T.copy(), recurrent_kernel.T.copy(), bias.copy(), np.zeros_like(bias)
