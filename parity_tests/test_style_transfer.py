"""Neural style transfer gives the same image in every framework: from the same content, style
and initial image and the same converted weights, ``STEPS`` Adam steps on the pixels give the
same loss curve, the same pixel gradient at every step (finite) and the same final image in
PyTorch (``zoo.style_transfer``), Keras on each backend and Flax.

Bounds (every step): loss within 1e-4 x the reference's, the pixel gradient within 1e-3 x the
reference's max |gradient| at the first step (the problem's scale: late gradients are small
and their differences carry the images' drift), the final image within 1e-3 on [0, 1] (the
issue's bound). Measured figures are far below (the note of issue 15). Each backbone runs
at a size that is no multiple of its strides. A planted bug (the port's style loss normalized
by N M instead of Gatys' 4 N^2 M^2; the port seeing BGR where the weights expect RGB) fails.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from family_suite import reference_model

from zoo.registry import FAMILIES
from zoo.style import StyleSettings
from zoo.training import AdamW

STEPS = 50
LOSS_RTOL, GRAD_RTOL, IMAGE_ATOL = 1e-4, 1e-3, 1e-3


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A tiny backbone config (a family's, with overrides), the image size and the layers."""

    family: str
    size: tuple[int, int]
    content: tuple[str, ...]
    style: tuple[str, ...]
    overrides: tuple[tuple[str, object], ...] = ()
    tv_weight: float = 0.0
    lr: float = 0.02
    style_weight: float = 1e3

    def config(self):
        return dataclasses.replace(FAMILIES[self.family].tiny, **dict(self.overrides))

    def settings(self, **changes) -> StyleSettings:
        settings = StyleSettings(
            content_layers=self.content,
            style_layers=self.style,
            style_weight=self.style_weight,
            tv_weight=self.tv_weight,
            steps=STEPS,
            optimizer=AdamW(lr=self.lr, weight_decay=0.0),
        )
        return dataclasses.replace(settings, **changes)


#: the tiny configs (``Family.tiny``): VGG19's layers as Gatys picks them (a tiny VGG has one
#: conv a stage: conv4_1 for conv4_2), CLIP RN50's stages, CLIP ViT's blocks (token Grams)
BACKBONES = {
    # the MNIST ConvNet on RGB: the library on the smallest features model there is
    "convnet": Backbone(
        "convnet", (13, 12), ("conv2",), ("conv1", "conv2"), (("in_chans", 3),), tv_weight=0.1
    ),
    "vgg": Backbone(
        "vgg",
        (37, 45),  # pools to 18 x 22, 9 x 11, 4 x 5, 2 x 2: relu5_1 on a 2 x 2 map
        ("conv4_1",),
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        (("features_only", True),),
    ),
    "clip_resnet": Backbone(
        "clip_resnet",
        (65, 79),
        ("layer3",),
        ("stem", "layer1", "layer2", "layer3", "layer4"),
        # random weights and random BatchNorm statistics make this the least stable run: at
        # lr 2e-3 Adam's sign-like steps amplified 1e-7 gradient differences into pixels 4e-3
        # apart, at 1e-3 gradients parted by 1.5e-3 x the first step's (measured, Keras-JAX);
        # at 5e-4 the worst of every framework is 3.6e-5 (gradients) and 1.6e-5 (pixels)
        lr=5e-4,
    ),
    "clip_vit": Backbone(
        "clip_vit",
        (39, 33),
        ("transformer.resblocks.1",),
        ("transformer.resblocks.0", "transformer.resblocks.1"),
        tv_weight=0.1,
    ),
}


def _images(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    h, w = size
    content = rng.random((h, w, 3), dtype=np.float32)
    style = rng.random((h, w, 3), dtype=np.float32)
    init = np.clip(content + 0.1 * rng.standard_normal((h, w, 3)).astype(np.float32), 0, 1)
    return content, style, init


@functools.cache
def _reference(name: str):
    """The reference's run (seed-7 random weights) and its weights."""
    from weight_convert.frameworks.reference import state_dict
    from zoo import style_transfer

    backbone = BACKBONES[name]
    model = reference_model(backbone.config(), seed=7)
    content, style, init = _images(backbone.size)
    result = style_transfer.transfer(
        model, content, style, backbone.settings(), init=init, record_gradients=True
    )
    return result, state_dict(model)


def _port_run(framework: str, name: str, **changes):
    """The port's run from the reference's weights, converted (``transfer.to_port``)."""
    from weight_convert import transfer
    from weight_convert.frameworks import port

    backbone = BACKBONES[name]
    adapter = port(framework)
    _, weights = _reference(name)
    model = adapter.build_model(backbone.config(), initialize=False)
    content, style, init = _images(backbone.size)
    adapter.materialize(model, [np.zeros((1, *backbone.size, 3), np.float32)], initialize=False)
    adapter.assign(model, transfer.to_port(weights, adapter.shapes(model)))
    module = __import__(f"ports.{framework}.style_transfer", fromlist=["transfer"])
    return module.transfer(
        model, content, style, backbone.settings(**changes), init=init, record_gradients=True
    )


def _differences(got, want) -> dict[str, float]:
    """The worst of each bound's ratio: loss, gradient (every step), image."""
    assert len(got.losses) == len(want.losses) == STEPS
    assert len(got.gradients) == len(want.gradients) == STEPS
    assert all(np.isfinite(g).all() for g in got.gradients), "a pixel gradient is not finite"
    loss = np.max(np.abs(got.losses - want.losses) / np.abs(want.losses))
    scale = np.abs(want.gradients[0]).max()
    grad = max(np.abs(g - r).max() for g, r in zip(got.gradients, want.gradients, strict=True))
    grad /= scale
    return {
        "loss": loss / LOSS_RTOL,
        "gradient": grad / GRAD_RTOL,
        "image": np.abs(got.image - want.image).max() / IMAGE_ATOL,
    }


FRAMEWORKS = [pytest.param("keras", marks=pytest.mark.keras), "flax"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", list(BACKBONES))
def test_same_image_in_every_framework(name, framework):
    if framework == "keras" and name.startswith("clip"):
        import keras

        if keras.backend.backend() != "tensorflow":  # CI time: ~15 s a backend
            pytest.skip("each backend's gradient is held on the ConvNet and VGG; CLIP on TF")
    want, _ = _reference(name)
    assert all(np.isfinite(g).all() for g in want.gradients)
    assert want.losses[-1] < 0.8 * want.losses[0], "the reference's loss did not fall"
    got = _port_run(framework, name)
    ratios = _differences(got, want)
    assert max(ratios.values()) <= 1.0, ratios


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_planted_bugs_are_caught(framework, monkeypatch):
    """The port's style loss normalized as N M (not 4 N^2 M^2), or fed BGR where the weights
    expect RGB: the curves part at once."""
    from zoo.style import IMAGENET

    want, _ = _reference("convnet")
    swapped = dataclasses.replace(IMAGENET, bgr=True)
    assert (
        max(_differences(_port_run(framework, "convnet", normalization=swapped), want).values()) > 1
    )
    module = __import__(f"ports.{framework}.style_transfer", fromlist=["gram"])
    original = module.gram
    monkeypatch.setattr(module, "gram", lambda f: original(f) * 0.5)
    assert max(_differences(_port_run(framework, "convnet"), want).values()) > 1


def test_lbfgs_where_the_framework_has_one():
    """L-BFGS (``zoo.style.LBFGS``): PyTorch's ``torch.optim.LBFGS`` and optax's ``lbfgs``, each
    its library's algorithm, start from the same loss (the first step's, before any update:
    within 1e-5), bring it below half in 10 steps with finite gradients; Keras, which has no
    L-BFGS, refuses it in one line."""
    from zoo import style_transfer
    from zoo.style import LBFGS

    backbone = BACKBONES["vgg"]
    settings = dataclasses.replace(backbone.settings(), optimizer=LBFGS(lr=1.0), steps=10)
    content, style, init = _images(backbone.size)
    _, weights = _reference("vgg")
    runs = {"torch": style_transfer.transfer(
        reference_model(backbone.config(), seed=7), content, style, settings, init=init,
        record_gradients=True,
    )}  # fmt: skip
    runs["flax"] = _port_run("flax", "vgg", optimizer=LBFGS(lr=1.0), steps=10)
    for name, run in runs.items():
        assert all(np.isfinite(g).all() for g in run.gradients), name
        assert run.losses[-1] < 0.5 * run.losses[0], (name, run.losses)
    assert abs(runs["flax"].losses[0] - runs["torch"].losses[0]) <= 1e-5 * runs["torch"].losses[0]
    with pytest.raises(ValueError, match="Keras has no L-BFGS"):
        pytest.importorskip("keras")
        from ports.keras import style_transfer as keras_style

        keras_style.transfer(None, content, style, settings)
