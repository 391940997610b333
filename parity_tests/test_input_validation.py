"""Input validation (``zoo.validate``) beyond what the shared suite checks on every family's model:
the backbones inside the containers reject an input of the wrong rank, channel count, layout or
dtype with a one-line ValueError naming the model, and still take a valid input; SAM's point
prompts; float64 and autocast in the reference; the compiled calls; the helper itself. The
families' tiny configs; the Keras cases carry the ``keras`` marker so they rerun
on every ``KERAS_BACKEND``.

A valid input runs for real in the reference; in the ports it is traced without computing
(a Keras symbolic call, ``nnx.eval_shape`` on abstract parameters), which runs every check at
the static shapes: eager JAX compiles op by op, and Flax's random initialization once per
parameter shape (minutes for these models). One model per port runs for real under the compiled
paths users take (``predict_on_batch``, ``nnx.jit``).

Keras re-raises a ``call`` error with its own header and the arguments received around the
message; the reference and Flax raise the one line as it is."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from family_suite import CHECKED_FRAMEWORKS

from zoo.configs import family_of
from zoo.registry import FAMILIES
from zoo.validate import check_image, check_points, dtype_name

#: container -> (model class, config): the models built, on the families' tiny configs
MODELS = {
    name: (FAMILIES[name].model, FAMILIES[name].tiny)
    for name in ("swin", "video_swin", "sam", "vitdet")
}
#: case -> (model class, container, attribute holding the model or None for the container itself,
#: valid channels-first input shape). The families' own models are checked by the shared suite
#: (family_suite.py); here are the parts a user calls directly, inside their containers.
CASES = {
    "swin3d": ("SwinTransformer3D", "video_swin", "backbone", (1, 3, 2, 8, 8)),
    "vit": ("ViT", "vitdet", "net", (1, 3, 32, 48)),
}
#: the containers themselves, for the tests beyond the suite's (float64, autocast, prompts,
#: compiled calls)
SWIN = ("SwinTransformer", "swin", None, (2, 3, 18, 13))
SAM_SHAPE = (2, 3, 128, 128)
_ALL = {**CASES, "swin": SWIN, "sam": ("Sam", "sam", None, SAM_SHAPE)}


def _build(framework: str, container: str):
    """A model of ``MODELS``; Keras built; Flax in eval mode with abstract parameters (every
    check runs before a parameter is read; a random initialization would compile once per
    parameter shape)."""
    name, config = MODELS[container]
    if framework == "torch":
        import zoo.models

        return getattr(zoo.models, name)(config).eval()
    if framework == "keras":
        from ports.keras import models

        model = getattr(models, name)(config)
        model.build(family_of(config).port_build_shape(config))
        return model
    from flax import nnx

    from ports.flax import models

    cls = getattr(models, name)
    model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
    model.eval()
    return model


_container = functools.cache(_build)


def _model(framework: str, case: str):
    name, container, attribute, _ = _ALL[case]
    model = _container(framework, container)
    model = model if attribute is None else getattr(model, attribute)
    assert type(model).__name__ == name
    return model


def _array(framework: str, shape_cf: tuple[int, ...], dtype=np.float32, layout: str | None = None):
    """A random input of channels-first shape ``shape_cf``, in the framework's own layout unless
    ``layout`` ("cf" / "cl") says otherwise, as the framework's tensor (NumPy for Keras)."""
    x = np.random.default_rng(0).uniform(0, 2, shape_cf).astype(dtype)
    layout = layout or ("cf" if framework == "torch" else "cl")
    if layout == "cl":
        x = np.moveaxis(x, 1, -1)
    x = np.ascontiguousarray(x)
    if framework == "torch":
        return torch.from_numpy(x)
    if framework == "flax":
        import jax.numpy as jnp

        return jnp.asarray(x)
    return x


def _prompts(framework: str, batch: int, n: int = 2, coords_shape=None, labels_shape=None):
    """Point prompts (coords (B, N, 2) float32, labels (B, N) int32) as the framework's tensors,
    shapes overridable to make them wrong."""
    coords = np.full(coords_shape or (batch, n, 2), 20.0, np.float32)
    labels = np.ones(labels_shape or (batch, n), np.int32)
    if framework == "torch":
        return [torch.from_numpy(coords), torch.from_numpy(labels)]
    if framework == "flax":
        import jax.numpy as jnp

        return [jnp.asarray(coords), jnp.asarray(labels)]
    return [coords, labels]


def _call(framework: str, case: str, x, **prompts):
    model = _model(framework, case)
    args = [x]
    if case == "sam":
        args += _prompts(framework, x.shape[0], **prompts)
    if framework == "torch":
        with torch.no_grad():
            return model(*args)
    return model(*args)


@pytest.fixture(params=CHECKED_FRAMEWORKS)
def framework(request) -> str:
    return request.param


@pytest.fixture(params=sorted(CASES))
def case(request) -> str:
    return request.param


def test_valid_input_runs(framework, case):
    shape = CASES[case][3]
    x = _array(framework, shape)
    if framework == "keras":
        import keras

        x = keras.Input(x.shape[1:], batch_size=x.shape[0])
    if framework == "flax":
        from flax import nnx

        model = _model(framework, case)
        args = [x, *_prompts(framework, shape[0])] if case == "sam" else [x]
        out = nnx.eval_shape(lambda m, *a: m(*a), model, *args)
    else:
        out = _call(framework, case, x)
    first = out[0] if isinstance(out, (list, tuple)) else out
    assert first.shape[0] == shape[0]


def test_wrong_rank(framework, case):
    name, *_, shape = CASES[case]
    rank = len(shape)
    unbatched = _array(framework, shape)[0]
    with pytest.raises(ValueError, match=rf"{name} expects a .* got shape .*\(rank {rank - 1}"):
        _call(framework, case, unbatched)
    if rank == 5:  # an image batch to a video model
        with pytest.raises(ValueError, match=rf"{name} expects .*\(rank 4, not 5\)"):
            _call(framework, case, _array(framework, shape[:2] + shape[3:]))


def test_wrong_channel_count(framework, case):
    name, *_, shape = CASES[case]
    with pytest.raises(ValueError, match=rf"{name} expects .*: 4 channels on .*in_chans=3"):
        _call(framework, case, _array(framework, (shape[0], 4, *shape[2:])))


def test_other_layout_is_named(framework, case):
    """Channels-last to the reference, channels-first to a port: the message says so."""
    name, *_, shape = CASES[case]
    if framework == "torch":
        x, pattern = _array(framework, shape, layout="cl"), "looks channels-last: the reference"
    else:
        x, pattern = _array(framework, shape, layout="cf"), "looks channels-first: the .* port"
    with pytest.raises(ValueError, match=rf"{name} expects .*{pattern}") as error:
        _call(framework, case, x)
    if framework != "keras":
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_integer_image_is_rejected(framework, case, dtype):
    name, *_, shape = CASES[case]
    got = np.dtype(dtype).name
    with pytest.raises(ValueError, match=rf"{name} expects a floating-point .*, got {got}: cast"):
        _call(framework, case, _array(framework, shape, dtype=dtype))


def test_reference_float64_input_to_float32_model(case):
    name, *_, shape = CASES[case]
    x = _array("torch", shape, dtype=np.float64)
    with pytest.raises(ValueError, match=rf"{name} has float32 parameters but .* is float64"):
        _call("torch", case, x)


def test_reference_autocast_skips_the_parameter_dtype_check():
    x = _array("torch", SWIN[3]).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _call("torch", "swin", x)
    assert out.shape == (2, 10)


def test_sam_point_prompts(framework):
    x = _array(framework, SAM_SHAPE)
    with pytest.raises(ValueError, match=r"Sam expects point_coords of shape \(B, N, 2\)"):
        _call(framework, "sam", x, coords_shape=(2, 2, 3))
    with pytest.raises(ValueError, match=r"Sam expects point_labels of shape \(B, N\)"):
        _call(framework, "sam", x, labels_shape=(2, 2, 1))
    with pytest.raises(ValueError, match=r"Sam: point_coords .* disagree on \(B, N\)"):
        _call(framework, "sam", x, labels_shape=(2, 3))
    with pytest.raises(ValueError, match=r"Sam: 2 images but point prompts for 1"):
        _call(framework, "sam", x, coords_shape=(1, 2, 2), labels_shape=(1, 2))


@pytest.mark.keras
def test_keras_symbolic_and_compiled_calls():
    """An open batch size passes; predict_on_batch (tf.function / jax.jit / torch) runs a valid
    input and validates at trace time. Fresh models: a second input shape would make TF retrace
    with open sizes."""
    import keras

    model = _model("keras", "swin")
    assert tuple(model(keras.Input((18, 13, 3))).shape) == (None, 10)
    with pytest.raises(ValueError, match="expects a .* got shape .*rank 5"):
        model(keras.Input((4, 18, 13, 3)))
    x = _array("keras", SWIN[3])
    assert _build("keras", "swin").predict_on_batch(x).shape == (2, 10)
    with pytest.raises(ValueError, match="looks channels-first"):
        _build("keras", "swin").predict_on_batch(np.moveaxis(x, -1, 1))


def test_flax_jit_call():
    """nnx.jit runs a valid input (zero parameters) and validates at trace time."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    def concrete(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.key(0)
        return jnp.zeros(leaf.shape, leaf.dtype)

    graph, state = nnx.split(_model("flax", "swin"))
    model = nnx.merge(graph, jax.tree.map(concrete, state))
    call = nnx.jit(lambda m, x: m(x))
    assert call(model, _array("flax", SWIN[3])).shape == (2, 10)
    with pytest.raises(ValueError, match="got uint8"):
        call(model, _array("flax", SWIN[3], dtype=np.uint8))


def test_helper_tolerates_unknown_sizes_and_names_dtypes():
    check_image(
        "M", (None, None, None, 3), "float32", framework="keras", channels=3, spatial_rank=2
    )
    check_image(
        "M", (None, 3, None, None), "float32", framework="torch", channels=3, spatial_rank=2
    )
    check_points("M", (None, None, 2), "float32", (None, None), "int32", batch=None)
    with pytest.raises(ValueError, match=r"got shape \(None, None, 3\) \(rank 3, not 4\)"):
        check_image("M", (None, None, 3), "float32", framework="flax", channels=3, spatial_rank=2)
    assert dtype_name(torch.bfloat16) == "bfloat16"
    assert dtype_name(np.dtype("uint8")) == "uint8"
    assert dtype_name("<dtype: 'float16'>") == "float16"  # str(tf.float16)
