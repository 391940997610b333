"""``weight_convert.port_files``: Flax msgpack files (byte-identical to Flax's own serialization,
restorable with the standard nnx API, every dtype bit-exact), the architecture inferred from port
variables, Keras ``.weights.h5`` read through the model with the zoo config as an HDF5
attribute, and Keras / Flax models in float32, float16 and bfloat16 whose saved files give the
values back bit-exactly. Tiny configs only."""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest

from weight_convert import layouts, port_files
from weight_convert.tensors import LazyTensor
from zoo.configs import arch_fields, reference_shapes
from zoo.registry import FAMILIES

DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}

#: the families' tiny configs (the vitdet one has windows smaller than the image: else the
#: shapes could not tell windowed blocks from global ones)
CONFIGS = {name: family.tiny for name, family in FAMILIES.items()}
SWIN, SAM = CONFIGS["swin"], CONFIGS["sam"]
#: Keras on JAX compiles every initializer per shape and dtype: one stage, and few distinct
#: shapes (MLP and head as wide as the embedding) keep that short
KERAS_SWIN = dataclasses.replace(
    SWIN,
    embed_dim=8,
    depths=(2,),
    num_heads=(2,),
    window_size=(2, 2),
    mlp_ratio=1.0,
    num_classes=8,
    img_size=8,
)


def random_values(shapes, dtype, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {p: rng.standard_normal(s).astype(DTYPES[dtype]) for p, s in shapes.items()}


def assert_bit_exact(got, want) -> None:
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert got[k].shape == v.shape, k
        assert got[k].tobytes() == v.tobytes(), k


def flax_model(config, dtype="float32", seed=0):
    """An abstract Flax model filled with random values: (model, values)."""
    from weight_convert.frameworks import flax_port

    model = port_files.abstract_flax_model(config, dtype)
    values = random_values(flax_port.shapes(model), dtype, seed)
    flax_port.assign(model, values)
    return model, values


# --------------------------------------------------------------------------- Flax msgpack


@pytest.mark.parametrize("family", ["swin", "sam"])
def test_msgpack_is_flax_serialization_of_the_pure_dict(tmp_path, family):
    from flax import nnx, serialization

    from ports.flax.layers.variables import CHECKPOINT_VARIABLES, Buffer
    from weight_convert.frameworks import flax_port

    model, _ = flax_model(CONFIGS[family])
    path = tmp_path / "m.msgpack"
    port_files.write_flax_msgpack(path, flax_port.read(model).items())
    state = nnx.state(model, CHECKPOINT_VARIABLES).to_pure_dict()
    assert path.read_bytes() == serialization.msgpack_serialize(state)
    has_buffer = any(isinstance(v, Buffer) for _, v in nnx.iter_graph(model))
    assert has_buffer == (family == "sam")  # SAM's Fourier matrix is in the file too


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_msgpack_round_trip_bit_exact(tmp_path, dtype):
    from weight_convert.frameworks import flax_port

    shapes = flax_port.shapes(port_files.abstract_flax_model(SWIN))
    values = random_values(shapes, dtype)
    # every other value lazy: the writer loads it then
    items = [
        (p, LazyTensor(v.shape, v.dtype, lambda v=v: v) if i % 2 else v)
        for i, (p, v) in enumerate(values.items())
    ]
    path = tmp_path / "m.msgpack"
    port_files.write_flax_msgpack(path, items)
    assert_bit_exact(port_files.read_flax_msgpack(path), values)


@pytest.mark.parametrize(("family", "dtype"), [("swin", "float32"), ("sam", "bfloat16")])
def test_msgpack_restores_with_the_flax_api(tmp_path, family, dtype):
    """The documented nnx restore (split, replace_by_pure_dict, merge) and ``nnx.update`` fill
    a ports.flax model with the file's values, in the file's dtype."""
    from flax import nnx, serialization

    from ports.flax.models import abstract_model
    from weight_convert.frameworks import flax_port

    config = CONFIGS[family]
    model, values = flax_model(config, dtype)
    path = tmp_path / "m.msgpack"
    port_files.write_flax_msgpack(path, flax_port.read(model).items())
    restored = serialization.msgpack_restore(path.read_bytes())

    graphdef, state = nnx.split(abstract_model(config))
    nnx.replace_by_pure_dict(state, restored)
    merged = nnx.merge(graphdef, state)
    assert_bit_exact(flax_port.read(merged), values)

    updated = abstract_model(config)
    nnx.update(updated, restored)
    assert_bit_exact(flax_port.read(updated), values)


def test_msgpack_reads_string_list_indices(tmp_path):
    """``serialization.to_bytes`` writes list indices as strings: the same paths come back."""
    from flax import nnx, serialization

    model, values = flax_model(SWIN)
    path = tmp_path / "m.msgpack"
    path.write_bytes(serialization.to_bytes(nnx.state(model, nnx.Param).to_pure_dict()))
    assert_bit_exact(port_files.read_flax_msgpack(path), values)


def test_msgpack_rejects_a_path_that_is_tensor_and_module(tmp_path):
    a = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="tensor too"):
        port_files.write_flax_msgpack(tmp_path / "m.msgpack", [("a.b", a), ("a.b.c", a)])
    with pytest.raises(ValueError, match="given twice"):
        port_files.write_flax_msgpack(tmp_path / "m.msgpack", [("a.b", a), ("a.b", a)])


@pytest.mark.parametrize("family", list(CONFIGS))
def test_config_inferred_from_port_variables(family):
    """A msgpack file stores no config: the variables' paths and shapes give the architecture
    (the training resolution ``img_size`` of a Swin is not in them: the default comes back)."""
    from weight_convert.frameworks import flax_port

    config = CONFIGS[family]
    shapes = flax_port.shapes(port_files.abstract_flax_model(config))
    inferred, _ = port_files.infer_port_config(shapes)
    assert type(inferred) is type(config)
    assert reference_shapes(inferred) == reference_shapes(config)
    if family != "sam_image_encoder":  # its arch fields include the (absent) decoder's
        for f in arch_fields(config):
            assert getattr(inferred, f) == getattr(config, f), f


def test_infer_port_config_rejects_foreign_variables():
    with pytest.raises(layouts.LayoutError, match="no model of this zoo"):
        port_files.infer_port_config({"encoder.layer.0.kernel": (4, 4)})


# --------------------------------------------------------------------------- Flax dtype


def test_flax_bfloat16_safetensors(tmp_path):
    """An abstract model declared bfloat16 takes bfloat16 values and saves them as BF16;
    ``ports.flax.serialization.load`` casts them to its float32 model (exactly), loading into a
    bfloat16 abstract model keeps them."""
    from safetensors import safe_open

    from ports.flax import serialization
    from weight_convert.frameworks import flax_port

    model, values = flax_model(SWIN, "bfloat16")
    path = tmp_path / "m.safetensors"
    serialization.save(model, path)
    with safe_open(str(path), framework="numpy") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {np.dtype(ml_dtypes.bfloat16)}
    widened = flax_port.read(serialization.load(path))
    assert_bit_exact(widened, {k: v.astype(np.float32) for k, v in values.items()})
    kept = port_files.abstract_flax_model(SWIN, "bfloat16")
    serialization.load_weights(kept, path)
    assert_bit_exact(flax_port.read(kept), values)


def test_shared_float_dtype():
    bf16 = ml_dtypes.bfloat16
    assert port_files.shared_float_dtype([np.float16, np.int64, np.float16]) == "float16"
    assert port_files.shared_float_dtype([bf16, np.int32]) == "bfloat16"
    assert port_files.shared_float_dtype([np.float32, bf16]) is None
    assert port_files.shared_float_dtype([np.float64]) is None


# --------------------------------------------------------------------------- Keras


@pytest.fixture(scope="module", params=list(DTYPES))
def keras_files(request, tmp_path_factory):
    """A tiny Keras Swin built in the dtype, random values in it, saved as ``.keras`` and as
    ``.weights.h5`` with the config attribute: (dtype, model, values, keras path, h5 path)."""
    from weight_convert.frameworks import keras_port

    dtype = request.param
    model = port_files.build_keras_model(KERAS_SWIN, dtype)
    values = random_values(keras_port.shapes(model), dtype)
    keras_port.assign(model, values)
    root = tmp_path_factory.mktemp(dtype)
    keras_path, h5_path = root / "m.keras", root / "m.weights.h5"
    model.save(str(keras_path))
    model.save_weights(str(h5_path))
    port_files.write_config_attr(h5_path, KERAS_SWIN)
    return dtype, model, values, keras_path, h5_path


@pytest.mark.keras
def test_keras_model_built_in_dtype(keras_files):
    import keras

    from weight_convert.frameworks import keras_port

    dtype, model, values, _, _ = keras_files
    assert keras.config.dtype_policy().name == "float32"  # restored after the build
    assert model.dtype_policy.name == dtype
    assert {keras.backend.standardize_dtype(v.dtype) for v in model.weights} == {dtype}
    assert_bit_exact(keras_port.read(model), values)


@pytest.mark.keras
def test_keras_files_store_the_dtype(keras_files):
    """Keras writes float16 natively and bfloat16 as opaque 2-byte data marked ``dtype``."""
    import h5py

    dtype, _, _, keras_path, h5_path = keras_files
    assert port_files.keras_file_dtype(keras_path) == dtype
    assert port_files.keras_file_dtype(h5_path) == dtype
    with h5py.File(h5_path) as f:
        dataset = f["head/vars/0"]
        if dtype == "bfloat16":
            assert (dataset.dtype.str, dataset.attrs["dtype"]) == ("|V2", "bfloat16")
        else:
            assert dataset.dtype == np.dtype(dtype)


@pytest.mark.keras
def test_keras_weights_h5_round_trip(keras_files):
    dtype, _, values, _, h5_path = keras_files
    assert port_files.read_config_attr(h5_path) == KERAS_SWIN
    assert_bit_exact(port_files.read_keras_weights_h5(h5_path), values)  # config from the file


@pytest.mark.keras
def test_keras_file_reloads_in_its_dtype_or_float32(keras_files):
    import keras

    from weight_convert.frameworks import keras_port

    dtype, _, values, keras_path, _ = keras_files
    stored = port_files.load_keras_model(keras_path)
    assert {keras.backend.standardize_dtype(v.dtype) for v in stored.weights} == {dtype}
    assert_bit_exact(keras_port.read(stored), values)

    widened = port_files.load_keras_model(keras_path, "float32")
    assert widened.dtype_policy.name == "float32"  # computes in float32: --verify's model
    assert {keras.backend.standardize_dtype(v.dtype) for v in widened.weights} == {"float32"}
    assert_bit_exact(keras_port.read(widened), {k: v.astype(np.float32) for k, v in values.items()})

    # keras' own loader: float32 variables holding the stored values exactly
    plain = keras_port.read(keras.saving.load_model(str(keras_path)))
    for k, v in values.items():
        assert np.array_equal(plain[k].astype(np.float32), v.astype(np.float32)), k


@pytest.mark.keras
def test_keras_weights_h5_strict(tmp_path):
    """A file holding more variables than the config's model (which ``load_weights`` would
    ignore) or fewer raises, from the datasets' shapes before the model is built; a file
    without the attribute needs the config."""
    fewer = dataclasses.replace(KERAS_SWIN, depths=(1,))
    model = port_files.build_keras_model(KERAS_SWIN)
    path = tmp_path / "m.weights.h5"
    model.save_weights(str(path))
    assert port_files.read_config_attr(path) is None
    with pytest.raises(ValueError, match="without naming their model"):
        port_files.read_keras_weights_h5(path)
    with pytest.raises(ValueError, match=r"not the SwinTransformer the given config describes"):
        port_files.read_keras_weights_h5(path, fewer)
    small = tmp_path / "small.weights.h5"
    port_files.build_keras_model(fewer).save_weights(str(small))
    with pytest.raises(ValueError):
        port_files.read_keras_weights_h5(small, KERAS_SWIN)


@pytest.mark.keras
def test_build_keras_model_restores_the_policy_on_error(monkeypatch):
    import keras

    import ports.keras.models

    def fail(config):
        assert keras.config.dtype_policy().name == "bfloat16"
        raise RuntimeError("build failed")

    monkeypatch.setattr(ports.keras.models, "build_model", fail)
    with pytest.raises(RuntimeError, match="build failed"):
        port_files.build_keras_model(KERAS_SWIN, "bfloat16")
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="unknown dtype"):
        port_files.build_keras_model(KERAS_SWIN, "mixed_bfloat16")
