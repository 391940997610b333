"""The framework-free core imports no deep-learning framework."""

from __future__ import annotations

import subprocess
import sys

import pytest

import zoo

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax")


def test_core_imports_without_frameworks():
    code = (
        "import sys\n"
        f"for name in {FRAMEWORKS!r}:\n"
        "    sys.modules[name] = None  # any import of them raises ImportError\n"
        "import zoo, zoo.windows, zoo.registry, zoo.tensor_format\n"
        "import weight_convert.rules, weight_convert.transfer, weight_convert.frameworks\n"
        "import zoo.configs, weight_convert.layouts, weight_convert.tolerance\n"
        "import weight_convert.cli, weight_convert.progress, weight_convert.convert\n"
        "import weight_convert.checkpoints, weight_convert.detectron2, weight_convert.errors\n"
        "import weight_convert.safetensors_io, weight_convert.tensors\n"
        "import zoo.shape_table, zoo.interpolate, zoo.sam_transforms\n"
        "import zoo.configs; zoo.configs.families(); zoo.configs.SwinConfig\n"
        "print(len(list(zoo.BLOCKS)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(list(zoo.BLOCKS))


def test_registry_error_names_known_entries():
    with pytest.raises(KeyError, match="unknown block 'Nope'; known: .*WindowAttention"):
        zoo.BLOCKS["Nope"]
    with pytest.raises(KeyError, match="registered twice"):
        zoo.BLOCKS.register("Mlp", ())


def test_ports_mirror_reference_names(port_name):
    import importlib

    import zoo.layers

    layers = importlib.import_module(f"ports.{port_name}.layers")
    assert set(zoo.layers.__all__) <= set(dir(layers))


#: reference modules with no port class: GELU2d applies GELU to a channels-first map, which the
#: channels-last ports do with the plain activation
REFERENCE_ONLY = {"GELU2d"}


def test_ports_mirror_reference_models(port_name):
    """Every module class a reference family module exports exists under the same name in the
    port."""
    import importlib

    from torch import nn

    from zoo.registry import framework_exports

    models = importlib.import_module(f"ports.{port_name}.models")
    reference = {
        name
        for name, obj in framework_exports("torch").items()
        if isinstance(obj, type) and issubclass(obj, nn.Module)
    }
    assert reference - REFERENCE_ONLY <= set(dir(models))
