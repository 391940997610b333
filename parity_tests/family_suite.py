"""The suite every registered family runs, fed by one test file per family
(``parity_tests/families/test_<family>.py``: a ``FamilySuite`` subclass naming the family, its
parity cases and the peers' checkpoint makers).

For each family, on its tiny config (``Family.tiny``, shared by every test):

- ``test_parity``: reference vs every port (Keras on each backend, Flax), random weights, every
  case (sizes that pad, batch > 1, non-square, ...): every output and every aligned layer within
  1e-4 x its std, and every reference layer aligned with a port layer (full coverage).
- ``test_mirror_tree``: the reference's parameter and buffer names, in order, equal the port's
  variable paths mapped by the rules (``weight_convert.mirror``), so drift is caught here rather
  than by a failing transfer.
- ``test_shape_table``: the family's framework-free key/shape table equals the reference's
  ``state_dict()``, in order.
- ``test_round_trip``: a checkpoint in each of the family's PyTorch layouts -> Keras -> Flax ->
  the same layout, bit-identical.
- ``test_cli_verify``: ``weight-convert convert --verify`` to Keras, Flax and back to PyTorch.
- ``test_input_validation``: the models of every framework take the example inputs and reject a
  wrong rank, channel count, channel order or dtype with one ``ValueError`` naming the model.
- ``test_planted_bug``: one port weight perturbed after the transfer: the parity run fails and
  names the layer holding it first, everything before it still passing.
- ``test_features``: named outputs (``Family.features``) spread over the pass, asked for at once:
  each within the model bound, gradients too, the dict's names in the order asked.

Keras on JAX and torch runs what each backend computes (parity, gradients, the default layout's
files); the planted bug, ``--verify`` to Keras and the features run Keras on TensorFlow only
(``KERAS_TF_ONLY``).

A family test file adds what is particular to the family (its peers, its extra inputs) beside
its suite class.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from stochastic import without_randomness

from weight_convert.parity.comparison import port_inputs
from weight_convert.tolerance import Tolerance
from zoo.configs import family_of
from zoo.family import Family
from zoo.registry import FAMILIES
from zoo.tensor_format import Format

__all__ = [
    "FamilySuite",
    "ParityCase",
    "assert_same_checkpoint",
    "keras_on_tensorflow_only",
    "generate_family_tests",
    "port_model",
    "reference_model",
]

#: the frameworks input checks run in (Keras on every backend through the ``keras`` marker)
CHECKED_FRAMEWORKS = ["torch", pytest.param("keras", marks=pytest.mark.keras), "flax"]
#: ``--to`` targets of the CLI test
CLI_TARGETS = [pytest.param("keras", marks=pytest.mark.keras), "flax", "torch"]
#: the wrong inputs every image / clip model must refuse
BAD_INPUTS = ("rank", "channels", "channel-order", "uint8", "int32")


@dataclasses.dataclass(frozen=True)
class ParityCase:
    """A parity run: ``config`` (default: the family's tiny one) on a first input of reference
    ``shape`` (None: the config's default)."""

    id: str
    shape: tuple[int, ...] | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


#: a checkpoint maker: (path without suffix, config, seed) -> the file written (a PyTorch
#: checkpoint, the suffix its code base uses)
Maker = Callable[[Path, Any, int], str]


def reference_model(config: Any, seed: int = 0):
    """The reference model of ``config`` with every parameter random (``randomize_``)."""
    import zoo.models
    from weight_convert.frameworks.reference import randomize_

    return randomize_(zoo.models.build_model(config), seed)


def port_model(adapter, config: Any):
    """The port's model of ``config``, ready for a weight transfer (no initializer runs)."""
    return adapter.build_model(config, initialize=False)


def assert_same_checkpoint(back: str, original: str, dropped: int | set[str] = 0) -> None:
    """``back`` holds exactly ``original``'s tensors less ``dropped`` (their names, or how many),
    bit-identical, nested under the same wrapper key; a streamed ``.pth`` is a sound zip (every
    record's CRC-32 right)."""
    from weight_convert import checkpoints

    if back.endswith(".pth"):
        with zipfile.ZipFile(back) as zf:
            assert zf.testzip() is None
    got, got_info = checkpoints.load_state_dict(back)
    want, want_info = checkpoints.load_state_dict(original)
    assert got_info["wrapper"] == want_info["wrapper"]
    assert set(got) <= set(want)
    missing = set(want) - set(got)
    assert missing == dropped if isinstance(dropped, set) else len(missing) == dropped, missing
    for key, value in got.items():
        assert value.dtype == want[key].dtype and value.shape == want[key].shape, key
        assert np.array_equal(value, want[key]), key


@functools.cache
def _validation_model(family: str, framework: str):
    """The family's tiny model in ``framework``, built once for the input checks: the reference
    with random weights, Keras built, Flax abstract."""
    config = FAMILIES[family].tiny
    if framework == "torch":
        return reference_model(config)
    from weight_convert.frameworks import port

    return port_model(port(framework), config)


def default_maker(layout: str, family: str) -> Maker:
    """A checkpoint in ``layout`` made from the reference's random weights through
    ``layouts.from_reference``, nested as that layout's ``.pth`` files are."""

    def make(stem: Path, config: Any, seed: int) -> str:
        import torch

        from weight_convert import layouts
        from weight_convert.frameworks.reference import state_dict

        state = state_dict(reference_model(config, seed))
        sd = layouts.from_reference(state, layout, family, config)
        if layouts.layout_spec(layout, family).huggingface is not None:  # a directory
            from weight_convert.outputs import huggingface_paths
            from weight_convert.writers import write_huggingface

            paths = huggingface_paths(stem, stem)
            write_huggingface(sd, paths, layouts.config_json(config, layout))
            return str(stem)
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
        wrapper = layouts.torch_wrapper(layout, family)
        path = stem.with_suffix(".pth")
        torch.save({wrapper: tensors} if wrapper else tensors, path)
        return str(path)

    return make


class FamilySuite:
    """Subclass as ``class TestSwin(FamilySuite): family = "swin"`` with the family's cases."""

    family: ClassVar[str] = ""
    #: parity cases on the tiny config (overrides make variations of it, e.g. features_only)
    cases: ClassVar[Sequence[ParityCase]] = (ParityCase("default"),)
    #: layout -> maker of a checkpoint as that layout's own code writes it (default: the
    #: reference's weights renamed by ``layouts.from_reference``)
    makers: ClassVar[dict[str, Maker]] = {}
    #: first-input shape of the CLI ``--verify`` run (None: the tiny config's default)
    verify_shape: ClassVar[tuple[int, ...] | None] = None

    @classmethod
    def spec(cls) -> Family:
        return FAMILIES[cls.family]

    @classmethod
    def tiny(cls, **overrides: Any) -> Any:
        return dataclasses.replace(cls.spec().tiny, **overrides)

    @classmethod
    def layouts(cls) -> list[str]:
        from weight_convert import layouts

        return layouts.family_layouts(cls.family)

    @classmethod
    def maker(cls, layout: str) -> Maker:
        return cls.makers.get(layout) or default_maker(layout, cls.family)

    # ------------------------------------------------------------------------ parity

    def run_parity(self, adapter, config, shape=None, seed: int = 0, after_transfer=None):
        from weight_convert.parity import run_config

        return run_config(config, adapter, shape, seed=seed, after_transfer=after_transfer)

    def test_parity(self, case: ParityCase, port):
        report = self.run_parity(port, self.tiny(**case.overrides), case.shape)
        assert report.passed, report.table()
        assert not report.unmatched, f"reference layers no port layer matched: {report.unmatched}"
        assert report.layers, "no layer was compared"

    def test_gradients(self, port):
        """Backward parity on the tiny config, in training mode with every stochastic rate at 0
        (so it is also the proof that training mode without randomness is the reference's): the
        gradients of one random projection of the outputs with respect to every parameter
        (aligned by reference key) and every floating input, each within the whole-model
        gradient bound."""
        from weight_convert.parity import MODEL_GRAD_TOLERANCE, run_config

        config = without_randomness(self.tiny(**self.cases[0].overrides))
        report = run_config(config, port, self.cases[0].shape, gradients=True, training=True)
        assert report.passed, report.table()
        assert report.settings["mode"] == "training"
        names = [n for n, _ in reference_model(config).named_parameters()]
        assert [e.path for e in report.layers] == names, "a parameter's gradient was not compared"
        assert report.outputs, "no input gradient was compared"
        assert MODEL_GRAD_TOLERANCE == Tolerance(atol=0.0, rmax=1e-4, rscale=1e-6)

    def test_float64(self, port):
        """In float64 the tiny config's forward pass (every layer) and gradients agree to
        1e-10 x max |reference| per tensor."""
        from weight_convert.parity import run_config

        if port.NAME in ("keras-jax", "keras-torch"):
            pytest.skip(f"{port.NAME}: Keras promotes float64 to float32 on this backend")
        config = self.tiny(**self.cases[0].overrides)
        for gradients in (False, True):
            report = run_config(
                config, port, self.cases[0].shape, gradients=gradients, dtype="float64"
            )
            assert report.passed, report.table()
            assert report.settings["dtype"] == "float64"

    def test_planted_bug(self, port):
        """A port weight perturbed after the transfer: the first layer above tolerance is the
        one holding it, and every layer before it passes (the harness's property: Keras on
        TensorFlow, and Flax)."""
        from weight_convert import parity, rules

        keras_on_tensorflow_only(port.NAME)

        config = self.tiny()
        inputs, _ = family_of(config).make_inputs(config)
        recorded = {
            path for path, _, _ in parity.run_reference(reference_model(config), inputs).records
        }
        candidates = [
            p
            for p in port.shapes(port_model(port, config))
            if p.endswith(".kernel") and rules.torch_key(p).rsplit(".", 1)[0] in recorded
        ]
        assert candidates, "no kernel of a recorded layer to perturb"
        target = candidates[len(candidates) // 2]
        layer = rules.torch_key(target).rsplit(".", 1)[0]

        def plant(model) -> None:
            value = np.asarray(port.read(model)[target])
            port.assign(model, {target: value + 0.5 * np.std(value) + 0.05})

        report = self.run_parity(port, config, after_transfer=plant)
        assert not report.passed
        first = report.first_failure
        assert first.path == layer, report.table()
        before = report.layers[: report.layers.index(first)]
        assert all(not e.exceeded for e in before)

    # ------------------------------------------------------------------------ features

    #: at most this many named outputs at once in ``test_features``, spread over the forward
    #: pass (a family's every name, aliases included, made ~45 s of jit compiles for VGG)
    FEATURE_SAMPLE: ClassVar[int] = 6

    def _features(self) -> tuple[str, ...]:
        """The family's feature names, ``FEATURE_SAMPLE`` of them spread from the first to the
        last, out of forward order (the order asked is the order returned)."""
        spec = self.spec()
        if spec.features is None:
            pytest.skip(f"{self.family} declares no named features (Family.features)")
        names = spec.features(self.tiny(**self.cases[0].overrides))
        picked = sorted({round(i) for i in np.linspace(0, len(names) - 1, self.FEATURE_SAMPLE)})
        return tuple(names[i] for i in reversed(picked))

    def test_features(self, port):
        """Named outputs spread over the forward pass (``_features``), asked for at once, last
        first, on the tiny config: the port's model returns a dict with exactly those names in
        that order, each output and
        every layer up to the last within the whole-model bound of the reference's, and the
        gradients of a loss on all of them (every parameter's and the image's: what style
        transfer follows) within the whole-model gradient bound."""
        from weight_convert.parity import run_config

        keras_on_tensorflow_only(port.NAME)
        names = self._features()
        config = self.tiny(**self.cases[0].overrides, features=names)
        for gradients in (False, True):
            report = run_config(config, port, self.cases[0].shape, gradients=gradients)
            assert report.passed, report.table()
            assert len(report.outputs) == (1 if gradients else len(names)), report.table()
        inputs, formats = self.spec().make_inputs(config, self.cases[0].shape)
        xs = port_inputs(inputs, formats)
        if port.NAME == "flax":  # traced with abstract weights (eager init + run: ~12 s, VGG)
            from flax import nnx

            out = nnx.eval_shape(lambda m, *a: m(*a), port_model(port, config), *xs)
            # a dict leaving a JAX transformation has its keys sorted (JAX's pytree order)
            assert isinstance(out, dict) and list(out) == sorted(names)
        else:
            out = port.build_model(config)(*xs)
            assert isinstance(out, dict) and list(out) == list(names)

    def test_features_refused(self):
        """A config naming an output the model does not have, or one twice, is refused when it
        is made (``resolve``: what every ``create_model`` calls), the message listing the names
        it has; a list is taken as a tuple."""
        from zoo.config_checks import ConfigError
        from zoo.configs import resolve

        names = self._features()
        base = self.tiny(**self.cases[0].overrides)
        assert resolve(base, features=[names[-1], names[0]]).features == (names[-1], names[0])
        first = re.escape(self.spec().features(base)[0])
        with pytest.raises(ConfigError, match=rf"features: unknown \['no_such'\].*: {first}"):
            resolve(base, features=[names[0], "no_such"])
        with pytest.raises(ConfigError, match="named twice"):
            resolve(base, features=[names[0], names[0]])

    # ------------------------------------------------------------------------ structure

    def test_mirror_tree(self, port):
        from weight_convert.frameworks.reference import state_dict
        from weight_convert.mirror import mirror_differences

        config = self.tiny()
        reference = list(state_dict(reference_model(config)))
        paths = list(port.shapes(port_model(port, config)))
        assert mirror_differences(reference, paths, port.NAME) == []

    def test_shape_table(self):
        from weight_convert.frameworks.reference import state_dict

        config = self.tiny()
        table = list(self.spec().shapes(config).items())
        actual = [(k, tuple(v.shape)) for k, v in state_dict(reference_model(config)).items()]
        assert table == actual

    # ------------------------------------------------------------------------ conversion

    @pytest.mark.keras
    def test_round_trip(self, layout: str, tmp_path):
        """checkpoint -> Keras -> Flax -> the same layout: every tensor bit-identical (tensors
        outside the model, e.g. detector heads, dropped and counted)."""
        from weight_convert import convert

        _one_layout_off_tensorflow(self.family, layout)
        source = self.maker(layout)(tmp_path / f"source_{layout}", self.tiny(), 1)
        keras_summary, _ = convert.convert(source, "keras", tmp_path / "m")
        assert (keras_summary.detected["layout"], keras_summary.detected["family"]) == (
            layout,
            self.family,
        )
        flax_summary, _ = convert.convert(keras_summary.outputs[0], "flax", tmp_path / "m")
        assert flax_summary.detected["source"] == "keras"
        back = tmp_path / ("back" if Path(source).is_dir() else f"back{Path(source).suffix}")
        summary, _ = convert.convert(flax_summary.outputs[0], "torch", back, layout=layout)
        assert summary.detected["source"] == "flax" and summary.layout == layout
        note = [n for n in keras_summary.detected["notes"] if "outside the model dropped" in n]
        dropped = int(note[0].split()[0]) if note else 0  # "N tensor(s) outside the model ..."
        assert_same_checkpoint(str(back), source, dropped)

    def test_load_checkpoint(self, layout: str, framework: str, tmp_path):
        """``create_model(checkpoint=PATH)`` of every framework on a checkpoint in each of the
        family's layouts: the architecture is the file's and every weight is exactly where the
        converter puts it (the reference's state dict, the port's variables as
        ``transfer.to_port`` gives them: bit-identical). The weights expected are the random
        reference's the checkpoint was made from (a peer's maker: its tensors, renamed)."""
        from weight_convert import checkpoints, layouts, transfer
        from weight_convert.frameworks import port
        from weight_convert.frameworks.reference import state_dict

        if framework == "keras":
            _one_layout_off_tensorflow(self.family, layout)

        config = self.tiny()
        source = self.maker(layout)(tmp_path / f"source_{layout}", config, 3)
        tensors, _ = checkpoints.load_state_dict(source)
        if layout in self.makers:
            expected = layouts.to_reference(tensors, layouts.detect(tensors))
        else:  # independent of the reading code: the weights the maker wrote
            expected = state_dict(reference_model(config, 3))
        model = _create(framework, checkpoint=source)
        if framework == "torch":
            got = state_dict(model)
        else:
            adapter = port(framework)
            got = adapter.read(model)
            expected = transfer.to_port(expected, adapter.shapes(model))
        assert list(got) == list(expected) if framework == "torch" else set(got) == set(expected)
        for key, value in expected.items():
            assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key
        assert family_of(model.config) is self.spec()
        assert layouts.detect(tensors).config == model.config

    def test_cli_verify(self, target: str, tmp_path, capsys):
        """``weight-convert convert --verify`` from the family's default layout to Keras and
        Flax (checked against the reference layer by layer), and from a Flax file back to
        PyTorch (the reference reading the written checkpoint against the Flax model)."""
        from weight_convert import cli, layouts

        if target == "keras":
            import keras

            keras_on_tensorflow_only(f"keras-{keras.backend.backend()}")
        config = self.tiny()
        layout = layouts.default_layout(self.family)
        source = self.maker(layout)(tmp_path / "source", config, 2)
        shape = self.verify_shape or self.spec().default_shape(config)
        verify = ["--verify", "--verify-shape", "x".join(map(str, shape))]
        if target == "torch":
            assert cli.main(["convert", source, "--to", "flax", "-o", str(tmp_path / "f")]) == 0
            source = str(tmp_path / "f.safetensors")
            out = tmp_path / "back.pth"
        else:
            out = tmp_path / "m"
        capsys.readouterr()
        code = cli.main(["convert", source, "--to", target, "-o", str(out), *verify])
        printed, err = capsys.readouterr()
        assert code == 0, err
        assert f"family:   {self.family}" in printed
        assert ": PASS" in printed and "<output" in printed

    # ------------------------------------------------------------------------ inputs

    def _call(self, framework: str, inputs: list[np.ndarray], symbolic: bool = False):
        """The family's tiny model in ``framework`` called on reference-format ``inputs``
        (ports get channels-last): the reference runs; Flax is traced with abstract parameters,
        which runs every check without computing; Keras runs eagerly, or is called on
        ``keras.Input``s when ``symbolic`` (a model that defines ``compute_output_shape`` then
        runs no ``call``, so bad inputs go in eagerly)."""
        config = self.tiny()
        formats = [i.format for i in self.spec().inputs(config, None)]
        model = _validation_model(self.family, framework)
        if framework == "torch":
            import torch

            with torch.no_grad():
                return model(*[torch.from_numpy(x) for x in inputs])
        from zoo.tensor_format import to_port_format

        xs = [to_port_format(x, f) for x, f in zip(inputs, formats, strict=True)]
        if framework == "keras":
            import keras

            if symbolic:
                xs = [keras.Input(x.shape[1:], batch_size=x.shape[0], dtype=x.dtype) for x in xs]
            return model(*xs)
        import jax.numpy as jnp
        from flax import nnx

        return nnx.eval_shape(lambda m, *a: m(*a), model, *[jnp.asarray(x) for x in xs])

    def test_input_validation(self, framework: str, bad: str):
        config = self.tiny()
        spec = self.spec()
        shape = spec.default_shape(config)
        inputs, _ = spec.make_inputs(config, (2, *shape[1:]))
        name = spec.model
        if bad == "valid":
            out = self._call(framework, inputs, symbolic=True)
            first = out[0] if isinstance(out, (list, tuple)) else out
            assert first.shape[0] == 2
            return
        first = spec.inputs(config, None)[0]
        if first.format is not Format.CHANNELS_FIRST:
            pytest.skip(f"{self.family}'s first input is no image: its test file checks it")
        x = inputs[0]
        if bad == "rank":
            x, pattern = x[0], rf"{name} expects a .* got shape .*\(rank {x.ndim - 1}"
        elif bad == "channels":
            x = np.concatenate([x, x[:, :1]], axis=1)
            pattern = rf"{name} expects .*: {x.shape[1]} channels on .*in_chans={x.shape[1] - 1}"
        elif bad == "channel-order":
            # the other framework's order: channels-last to the reference, first to a port
            x = np.moveaxis(x, 1, -1) if framework == "torch" else np.moveaxis(x, -1, 1)
            other = "last: the reference" if framework == "torch" else "first: the .* port"
            pattern = rf"{name} expects .*looks channels-{other}"
        else:
            x = (np.abs(x) * 10).astype(bad)
            pattern = rf"{name} expects a floating-point .*, got {bad}: cast"
        with pytest.raises(ValueError, match=pattern):
            self._call(framework, [x, *inputs[1:]])


#: why a test runs Keras on TensorFlow only: the numbers each backend computes are held on
#: every backend by test_parity, test_gradients and the default layout's round trip and
#: loading; what these tests add (the harness naming a planted bug, the CLI's --verify run, a
#: dict of named outputs; a family's planted bugs, training mode or peer weights repeated) is
#: the same Keras code on every backend (CI time: ~60 s a pass)
KERAS_TF_ONLY = "the Keras code is the same on every backend: TensorFlow runs it (CI time)"


def keras_on_tensorflow_only(name: str) -> None:
    """Skip a Keras test on JAX and torch (``KERAS_TF_ONLY``); ``name``: the adapter's NAME."""
    if name in ("keras-jax", "keras-torch"):
        pytest.skip(f"{name}: {KERAS_TF_ONLY}")


def _one_layout_off_tensorflow(family: str, layout: str) -> None:
    """Skip a Keras test of a layout other than the family's default on Keras's JAX and torch
    backends: the layouts are framework-free (the TensorFlow pass runs every one), the Keras
    reading and writing they feed is the same for all (the default layout runs it here)."""
    import keras

    from weight_convert import layouts

    if keras.backend.backend() != "tensorflow" and layout != layouts.default_layout(family):
        pytest.skip("layouts are framework-free: every one runs on TensorFlow, the default here")


def _create(framework: str, **kwargs):
    """``create_model(**kwargs)`` of ``framework``'s models package."""
    if framework == "torch":
        import zoo.models as models
    elif framework == "keras":
        import ports.keras.models as models
    else:
        import ports.flax.models as models
    return models.create_model(**kwargs)


def generate_family_tests(metafunc) -> None:
    """``pytest_generate_tests`` for ``FamilySuite`` subclasses (called from conftest.py)."""
    cls = metafunc.cls
    if cls is None or not issubclass(cls, FamilySuite) or not cls.family:
        return
    names = metafunc.fixturenames
    if "case" in names:
        metafunc.parametrize("case", list(cls.cases), ids=[c.id for c in cls.cases])
    if "layout" in names:
        metafunc.parametrize("layout", cls.layouts())
    if "target" in names:
        metafunc.parametrize("target", CLI_TARGETS)
    if "framework" in names:
        metafunc.parametrize("framework", CHECKED_FRAMEWORKS)
    if "bad" in names:
        metafunc.parametrize("bad", ["valid", *BAD_INPUTS])
