"""The framework-free core imports no deep-learning framework."""

from __future__ import annotations

import subprocess
import sys

import pytest

import zoo

FRAMEWORK_PACKAGES = ("torch", "tensorflow", "keras", "jax", "flax")


def test_core_imports_without_frameworks():
    code = (
        "import sys\n"
        f"for name in {FRAMEWORK_PACKAGES!r}:\n"
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


def test_every_family_runs_the_shared_suite():
    """Each registered family has its test file in parity_tests/families/ feeding the shared
    suite (a ``FamilySuite`` subclass naming it), and a tiny config that suite builds."""
    import importlib.util
    from pathlib import Path

    from family_suite import FamilySuite

    fed = set()
    for path in sorted((Path(__file__).parent / "families").glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"_suite_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fed |= {
            obj.family
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, FamilySuite) and obj.family
        }
    assert fed == set(zoo.FAMILIES)
    for name, family in zoo.FAMILIES.items():
        assert family.tiny is not None and family.tiny.family == name, name


def test_deprecations_from_the_project_fail_the_tests():
    """pyproject's filterwarnings: a DeprecationWarning attributed to a module of this project is
    an error; one from a framework's own module stays ignored."""
    import warnings

    with pytest.raises(DeprecationWarning):
        warnings.warn_explicit("old", DeprecationWarning, "zoo/x.py", 1, module="zoo.x")
    with pytest.raises(FutureWarning):
        warnings.warn_explicit("old", FutureWarning, "w/x.py", 1, module="weight_convert.x")
    warnings.warn_explicit("theirs", DeprecationWarning, "keras/x.py", 1, module="keras.x")
    warnings.warn_explicit("theirs", DeprecationWarning, "zoology.py", 1, module="zoology")


def test_encoder_only_variant_override_builds_the_encoder_in_every_framework():
    """``create_model("sam_vit_b", encoder_only=True)`` is the image encoder in every framework
    (the class follows the config's family; the reference and Flax used to build a full Sam)."""
    import zoo.models

    small = dict(
        encoder_only=True,
        encoder_embed_dim=32,
        encoder_depth=1,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(0,),
        img_size=64,
        out_chans=16,
    )
    assert type(zoo.models.create_model("sam_vit_b", **small)).__name__ == "ImageEncoderViT"
    assert (
        type(zoo.models.create_model("sam_vit_b", **{**small, "encoder_only": False})).__name__
        == "Sam"
    )


@pytest.mark.keras
def test_encoder_only_variant_override_keras():
    from ports.keras.models import create_model

    model = create_model("sam_vit_b", encoder_only=True, encoder_depth=1, img_size=64)
    assert type(model).__name__ == "ImageEncoderViT"


def test_encoder_only_variant_override_flax():
    from ports.flax.models import abstract_model, create_model
    from zoo.configs import resolve

    assert (
        type(abstract_model(resolve("sam_vit_b", encoder_only=True))).__name__ == "ImageEncoderViT"
    )
    small = dict(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2, img_size=32)
    model = create_model("sam_vit_b", encoder_only=True, encoder_global_attn_indexes=(0,), **small)
    assert type(model).__name__ == "ImageEncoderViT"


#: what the three models packages exported before families registered themselves
MODEL_NAMES = [
    "BasicLayer", "I3DHead", "ImageEncoderViT", "MaskDecoder", "PromptEncoder", "Sam",
    "SwinTransformer", "SwinTransformer3D", "TwoWayTransformer", "SimpleFeaturePyramid", "ViT",
    "VideoSwin", "create_model", "build_model",
]  # fmt: skip


@pytest.mark.parametrize(
    "package",
    [
        "zoo.models",
        pytest.param("ports.keras.models", marks=pytest.mark.keras),
        "ports.flax.models",
    ],
)
def test_models_packages_export_every_model_part(package):
    """The model classes and their parts are attributes of each models package, in its
    ``__all__`` (found in every module of the package, not only the families' own)."""
    import importlib

    models = importlib.import_module(package)
    assert set(MODEL_NAMES) <= set(models.__all__) <= set(dir(models))
    for name in MODEL_NAMES:
        assert getattr(models, name) is not None


def test_a_family_of_token_inputs_needs_its_own_checks():
    """The default input check knows images and clips: a family whose first input is token ids
    must bring ``check_inputs`` (refused at registration), and its Keras build shape keeps the
    sequence length open."""
    from dataclasses import dataclass

    from zoo.family import Family, Input, register_family

    @dataclass(frozen=True)
    class TokensConfig:
        vocab: int = 10

        @property
        def family(self) -> str:
            return "tokens_test"

    def inputs(config, shape):
        return (Input(tuple(shape or (1, 7)), name="ids"),)

    spec = Family("tokens_test", TokensConfig, "Tokens", dict, inputs, tiny=TokensConfig())
    with pytest.raises(TypeError, match="no image or clip: give check_inputs"):
        register_family(spec)
    assert "tokens_test" not in zoo.FAMILIES
    assert spec.port_build_shape(TokensConfig()) == (None, None)
