"""The CNN-LSTM captioner in the shared suite (tiny: one-block Bottleneck stages, a two-layer
LSTM), and what is particular to it: packing (logits on padded batches of unequal lengths in
``pack_padded_sequence``'s order, nothing read from padding), greedy decoding in the three
frameworks, the vocabulary, the LSTM's layout and the tutorial's two files. One training step:
test_captioner_training.py."""

from __future__ import annotations

import numpy as np
import pytest
from family_suite import (
    FamilySuite,
    ParityCase,
    keras_on_tensorflow_only,
    port_model,
    reference_model,
)
from stochastic import without_randomness

from weight_convert.tolerance import Tolerance


class TestCaptioner(FamilySuite):
    family = "captioner"
    # one case (CI time): the ResNet's sizes are the resnet suite's; here batch 3, odd sides
    cases = (ParityCase("b3-odd-29x35", (3, 3, 29, 35)),)

    def test_gradients(self, port):
        """Backward parity in training mode, as the suite's, except for the images: the
        tutorial's encoder runs its ResNet without gradients (``torch.no_grad``; the ports
        ``stop_gradient``), so the images get none and every ResNet parameter's gradient is
        zero in every framework, while linear, bn and the decoder's are within the bound."""
        from weight_convert.parity import MODEL_GRAD_TOLERANCE, run_config

        config = without_randomness(self.tiny())
        report = run_config(config, port, self.cases[0].shape, gradients=True, training=True)
        assert report.passed, report.table()
        assert MODEL_GRAD_TOLERANCE == Tolerance(atol=0.0, rmax=1e-4, rscale=1e-6)
        names = [n for n, _ in reference_model(config).named_parameters()]
        assert [e.path for e in report.layers] == names
        assert not report.outputs  # the images: no gradient, as in the tutorial
        frozen = [e for e in report.layers if e.path.startswith("encoder.resnet.")]
        trained = [e for e in report.layers if not e.path.startswith("encoder.resnet.")]
        assert frozen and all(e.max_abs == 0.0 for e in frozen), report.table()
        assert len(trained) == len(names) - len(frozen)

    @pytest.mark.slow
    def test_float64(self, port):
        """The suite's float64 run (forward and gradients to 1e-10), with -m slow: ~12 s of CI
        time for the two compiles. It caught ``nnx.Embed`` computing a float64 model's lookup in
        float32 (``ports.flax.models.captioner.TokenEmbedding``)."""
        super().test_float64(port)

    def test_cli_verify(self, target: str, tmp_path, capsys):
        """The suite's ``--verify`` runs to Keras and Flax; back to PyTorch (a Flax file read
        by the reference: machinery no family changes) is ``test_cli_verify_to_torch``, with
        -m slow (CI time)."""
        if target == "torch":
            pytest.skip("test_cli_verify_to_torch (-m slow) runs it: CI time")
        super().test_cli_verify(target, tmp_path, capsys)

    @pytest.mark.slow
    def test_cli_verify_to_torch(self, tmp_path, capsys):
        FamilySuite.test_cli_verify(self, "torch", tmp_path, capsys)

    def test_input_validation(self, framework: str, bad: str):
        """The suite's image checks; the valid inputs give the packed logits (B * T, V)."""
        if bad != "valid":
            return super().test_input_validation(framework, bad)
        config = self.tiny()
        inputs, _ = self.spec().make_inputs(config, (2, 3, 32, 32))
        out = self._call(framework, inputs, symbolic=True)
        assert tuple(out.shape) == (2 * config.caption_length, config.vocab_size)

    @pytest.mark.parametrize("wrong", ["float-captions", "rank-3-captions", "batch"])
    def test_bad_captions(self, framework: str, wrong: str):
        """Captions that are not (B, T) integer ids for the images' batch: one ValueError
        naming the model, in every framework."""
        config = self.tiny()
        images, captions = self.spec().make_inputs(config, (2, 3, 32, 32))[0]
        if wrong == "float-captions":
            captions, pattern = captions.astype(np.float32), "integer token ids.*float32"
        elif wrong == "rank-3-captions":
            captions, pattern = captions[..., None], r"captions \(B, T\).*shape \(2, 7, 1\)"
        else:
            captions, pattern = captions[:1], "2 images but 1 captions"
        with pytest.raises(ValueError, match=f"Captioner.*{pattern}"):
            self._call(framework, [images, captions])


# ---------------------------------------------------------------------------- packing


#: the planted-bug tests: Keras (on TensorFlow), and Flax with -m slow (each Flax run compiles
#: the model again, ~3-9 s of CI time; the same gather and gate code is what Flax's parity
#: tests hold)
PLANTED_PORTS = [
    pytest.param("keras", marks=pytest.mark.keras),
    pytest.param("flax", marks=pytest.mark.slow),
]


def keras_numpy(x) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(x)


def tensorflow_only_for_keras(port) -> None:
    """Keras runs the captioner's own tests on TensorFlow only (``KERAS_TF_ONLY``): eager
    Keras on JAX compiles every op of the unrolled LSTM (~12 s a test); the numbers each
    backend computes are held by the suite's parity, gradients and round trip."""
    keras_on_tensorflow_only(port.NAME)


#: a sorted batch of unequal lengths (the tutorial's collate_fn order), padded to T = 7; one
#: caption at the padded length, one of length 1 (the image feature alone)
LENGTHS = (7, 5, 5, 3, 1)


def _packed_batch(seed: int = 4):
    """Images, captions (B, T) and the padded positions (t >= length - 1: from there on a
    token is only ever a target, never an input, so garbage there must change nothing)."""
    config = TestCaptioner.tiny()
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((len(LENGTHS), 3, 32, 32)).astype(np.float32)
    captions = rng.integers(1, config.vocab_size, (len(LENGTHS), 7)).astype(np.int32)
    padded = np.arange(7)[None, :] >= np.asarray(LENGTHS)[:, None] - 1
    return config, images, captions, padded


def _garbage(captions: np.ndarray, padded: np.ndarray, seed: int) -> np.ndarray:
    other = np.random.default_rng(seed).integers(0, TestCaptioner.tiny().vocab_size, captions.shape)
    return np.where(padded, other, captions).astype(np.int32)


def test_packed_order_is_pack_padded_sequences():
    """``packed_order`` gives the rows of ``pack_padded_sequence(...).data`` for sorted
    lengths (equal ones, a length-1 sequence, one batch), and refuses what
    ``enforce_sorted=True`` refuses (unsorted lengths), a 0 and a length past the padding."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence

    from zoo.packing import packed_order

    for lengths in [LENGTHS, (4, 4, 4), (1,), (6, 2, 1, 1)]:
        steps = max(lengths)
        index = torch.arange(len(lengths) * steps).reshape(len(lengths), steps)
        packed = pack_padded_sequence(index, list(lengths), batch_first=True).data.numpy()
        b, t = packed_order(lengths)
        assert np.array_equal(b * steps + t, packed), lengths
    with pytest.raises(RuntimeError, match="sorted in decreasing order"):
        pack_padded_sequence(torch.zeros(2, 3), [2, 3], batch_first=True)
    for bad, message in [((2, 3), "not sorted in decreasing"), ((3, 0), "in 1..3")]:
        with pytest.raises(ValueError, match=message):
            packed_order(bad)


def test_packed_logits_ignore_padding(port):
    """Teacher-forced logits on a padded batch of unequal lengths: the port's packed rows within
    1e-4 x std of the reference's (``pack_padded_sequence`` + ``nn.LSTM``), eval mode; garbage
    tokens in the padded positions change neither the reference's nor the port's logits by one
    bit (nothing is computed from padding)."""
    tensorflow_only_for_keras(port)
    import torch

    from weight_convert import transfer
    from weight_convert.frameworks.reference import state_dict
    from zoo.tensor_format import Format, to_port_format

    config, images, captions, padded = _packed_batch()
    reference = reference_model(config, seed=5)
    model = port_model(port, config)
    port.assign(model, transfer.to_port(state_dict(reference), port.shapes(model)))

    def ref_logits(caps):
        with torch.no_grad():
            return reference(torch.from_numpy(images), torch.from_numpy(caps), LENGTHS).numpy()

    port_images = to_port_format(images, Format.CHANNELS_FIRST)

    if port.NAME == "flax":  # compiled once for the three calls (lengths static)
        from flax import nnx

        run = nnx.jit(lambda m, x, c: m(x, c, LENGTHS))
    else:

        def run(m, x, c):
            return keras_numpy(m(x, c, lengths=list(LENGTHS)))

    def port_logits(caps):
        return np.asarray(run(model, port_images, caps))

    want, got = ref_logits(captions), port_logits(captions)
    assert want.shape == got.shape == (sum(LENGTHS), config.vocab_size)
    err = float(np.max(np.abs(got - want)))
    assert err <= 1e-4 * float(np.std(want)), (err, float(np.std(want)))
    for seed in (1, 2):
        noisy = _garbage(captions, padded, seed)
        assert not np.array_equal(noisy, captions)
        assert np.array_equal(ref_logits(noisy), want)
        assert np.array_equal(port_logits(noisy), got)


@pytest.mark.parametrize("port_name", PLANTED_PORTS)
def test_batch_major_packing_fails(port, monkeypatch):
    """Planted bug: the port gathering its rows batch-major (sequence after sequence, the
    natural reshape of a padded batch) instead of ``pack_padded_sequence``'s time-major order:
    the packed logits leave the bound."""
    tensorflow_only_for_keras(port)
    import importlib

    from weight_convert import transfer
    from weight_convert.frameworks.reference import state_dict
    from zoo.tensor_format import Format, to_port_format

    framework = port.NAME.split("-")[0]
    module = importlib.import_module(f"ports.{framework}.models.captioner")

    def batch_major(lengths):
        b = [i for i, n in enumerate(lengths) for _ in range(n)]
        t = [s for n in lengths for s in range(n)]
        return np.asarray(b, np.int32), np.asarray(t, np.int32)

    monkeypatch.setattr(module, "packed_order", batch_major)
    import torch

    config, images, captions, _ = _packed_batch()
    reference = reference_model(config, seed=5)
    model = port_model(port, config)
    port.assign(model, transfer.to_port(state_dict(reference), port.shapes(model)))
    with torch.no_grad():
        want = reference(torch.from_numpy(images), torch.from_numpy(captions), LENGTHS).numpy()
    x = to_port_format(images, Format.CHANNELS_FIRST)
    got = keras_numpy(model(x, captions, lengths=list(LENGTHS)))
    assert float(np.max(np.abs(got - want))) > 1e-2 * float(np.std(want))


# ---------------------------------------------------------------------------- greedy

#: a differing greedy token is allowed only where the reference's top-2 logits are this close
#: (float32 rounding of the logits, ~1e-6 here, times a safety factor)
NEAR_TIE = 1e-4


def _lively(reference):
    """Random weights rescaled so greedy decoding wanders (all-random weights at the tiny
    sizes saturate the LSTM and repeat one token): no output bias or LSTM biases, the
    recurrence damped (x0.3), embeddings and output weights amplified (x4, x3)."""
    import torch

    with torch.no_grad():
        reference.decoder.linear.bias.zero_()
        reference.decoder.linear.weight.mul_(3)
        reference.decoder.embed.weight.mul_(4)
        for name, p in reference.decoder.lstm.named_parameters():
            p.mul_(0.0 if "bias" in name else 0.3 if "hh" in name else 1.0)
    return reference


def _greedy(port, config, seed: int, plant=None):
    """Reference and port greedy ids / logits for 6 images, the same converted weights,
    ``config.max_seg_length`` steps."""
    import torch

    from weight_convert import transfer
    from weight_convert.frameworks.reference import state_dict
    from zoo.tensor_format import Format, to_port_format

    images = np.random.default_rng(seed).standard_normal((6, 3, 32, 32)).astype(np.float32)
    reference = _lively(reference_model(config, seed=seed).eval())
    with torch.no_grad():
        ids, logits = (t.numpy() for t in reference.greedy(torch.from_numpy(images)))
    model = port_model(port, config)
    port.assign(model, transfer.to_port(state_dict(reference), port.shapes(model)))
    if plant is not None:
        plant()
    x = to_port_format(images, Format.CHANNELS_FIRST)
    if port.NAME == "flax":  # one compiled loop (eager JAX compiles every op of 20 steps)
        from flax import nnx

        got = np.asarray(nnx.jit(lambda m, x: m.greedy(x))(model, x)[0])
    else:
        got = keras_numpy(model.greedy(x)[0])
    return ids, logits, got


#: weight draws whose greedy decodings wander (11 and 9 distinct tokens in 20 steps); the
#: second with -m slow (CI time)
GREEDY_SEEDS = [2, pytest.param(3, marks=pytest.mark.slow)]


@pytest.mark.parametrize("seed", GREEDY_SEEDS)
def test_greedy_tokens_agree(port, seed):
    """``sample()``'s greedy token sequences (12 steps, CI time; 6 images; a weight draw)
    equal the reference's: a difference would be allowed only at a near-tie of the
    reference's top-2 logits (``NEAR_TIE``), and none occurs. The smallest top-2 margin met
    is in the failure message."""
    tensorflow_only_for_keras(port)
    from zoo.packing import greedy_disagreements, top2_margin

    config = TestCaptioner.tiny(max_seg_length=12)
    ids, logits, got = _greedy(port, config, seed)
    assert ids.shape == got.shape == (6, 12)
    assert len(np.unique(ids)) >= 6, "a degenerate decoding tests nothing"
    bad = [d for d in greedy_disagreements(ids, logits, got, NEAR_TIE) if not d.near_tie]
    margin = float(top2_margin(logits).min())
    assert not bad, (bad, margin)


@pytest.mark.parametrize("port_name", PLANTED_PORTS)
def test_greedy_planted_gate_order_fails(port, monkeypatch):
    """Planted bug: the port's LSTM reading its gates as i, f, o, g (a common misreading of
    PyTorch's i, f, g, o): greedy sequences differ at steps with large top-2 margins."""
    tensorflow_only_for_keras(port)
    import importlib

    from zoo.packing import greedy_disagreements

    framework = port.NAME.split("-")[0]
    rnn = importlib.import_module(f"ports.{framework}.layers.rnn")
    step = rnn.lstm_step

    def swapped(gates, c):
        h = gates.shape[-1] // 4
        i, f, o, g = (gates[..., k * h : (k + 1) * h] for k in range(4))
        return step(rnn_concat(framework, [i, f, g, o]), c)

    monkeypatch.setattr(rnn, "lstm_step", swapped)
    ids, logits, got = _greedy(port, TestCaptioner.tiny(max_seg_length=12), 2)
    bad = [d for d in greedy_disagreements(ids, logits, got, NEAR_TIE) if not d.near_tie]
    assert bad


def rnn_concat(framework: str, parts):
    if framework == "keras":
        from keras import ops

        return ops.concatenate(parts, axis=-1)
    import jax.numpy as jnp

    return jnp.concatenate(parts, axis=-1)


# ---------------------------------------------------------------------------- vocabulary

CAPTIONS = (
    "A man riding a wave on top of a surfboard.",
    "A man's dog is riding a skateboard down the street.",
    "Two dogs play with a red frisbee on the grass.",
    "A red double-decker bus driving down a street.",
    "a MAN holding a frisbee, smiling.",
)


def test_vocabulary_as_the_tutorial_builds_it():
    """Specials at 0..3 (``<pad>`` 0), words kept at the count threshold in order of first
    appearance, unknown words as ``<unk>``, encode wraps in ``<start>`` / ``<end>``, decode
    stops at ``<end>``; the tokenizer's differences from nltk's stated in zoo.vocabulary."""
    from zoo.vocabulary import build_vocab, pad_batch, tokenize

    assert tokenize("A man's T-shirt, red.") == ["a", "man's", "t-shirt", ",", "red", "."]
    vocab = build_vocab(CAPTIONS, threshold=2)
    assert [vocab.idx2word[i] for i in range(4)] == ["<pad>", "<start>", "<end>", "<unk>"]
    kept = [vocab.idx2word[i] for i in range(4, len(vocab))]
    # "man's" is one token here (nltk: "man", "'s"), so "man" is counted from the other two
    assert kept == ["a", "man", "riding", "on", ".", "down", "the", "street", "red", "frisbee"]
    ids = vocab.encode("A man riding a zebra.")
    assert ids == [1, 4, 5, 6, 4, 3, 8, 2]
    assert vocab.decode([*ids, 5, 5]) == ["a", "man", "riding", "a", "<unk>", "."]
    assert len(build_vocab(CAPTIONS, threshold=1)) == 4 + len(
        {w for c in CAPTIONS for w in tokenize(c)}
    )
    rows, lengths = pad_batch([vocab.encode(c) for c in CAPTIONS[:3]])
    assert lengths == sorted(lengths, reverse=True) and all(len(r) == lengths[0] for r in rows)
    assert rows[-1][lengths[-1] :] == [0] * (lengths[0] - lengths[-1])
    with pytest.raises(ValueError, match="threshold 0"):
        build_vocab(CAPTIONS, threshold=0)


# ---------------------------------------------------------------------------- files, LSTM


def test_tutorial_files_read_as_one_model(tmp_path):
    """The tutorial's two files (``torch.save(encoder.state_dict())``, the decoder's likewise)
    joined by ``combine_tutorial_files``: detected as the tutorial layout with the model's
    config, every tensor where it was, and split back into the two state dicts bit-identical;
    a file whose keys are already prefixed is refused."""
    import torch

    from weight_convert import checkpoints, layouts
    from weight_convert.frameworks.reference import state_dict
    from weight_convert.layouts.captioner import combine_tutorial_files, split_tutorial_state

    config = TestCaptioner.tiny()
    model = reference_model(config, seed=2)
    torch.save(model.encoder.state_dict(), tmp_path / "encoder-5-3000.ckpt")
    torch.save(model.decoder.state_dict(), tmp_path / "decoder-5-3000.ckpt")
    out = combine_tutorial_files(
        tmp_path / "encoder-5-3000.ckpt", tmp_path / "decoder-5-3000.ckpt", tmp_path / "c.pth"
    )
    tensors, _ = checkpoints.load_state_dict(out)
    detected = layouts.detect(tensors)
    assert (detected.layout, detected.family) == ("tutorial", "captioner")
    assert detected.config == layouts.detect(state_dict(model)).config
    assert detected.config.num_layers == 2 and detected.config.vocab_size == config.vocab_size
    want = state_dict(model)
    assert list(tensors) == list(want)
    assert all(np.array_equal(tensors[k], want[k]) for k in want)
    encoder, decoder = split_tutorial_state(tensors)
    for half, sd in ((model.encoder, encoder), (model.decoder, decoder)):
        assert list(sd) == list(half.state_dict())
        assert all(np.array_equal(sd[k], v.numpy()) for k, v in half.state_dict().items())
    with pytest.raises(layouts.LayoutError, match="already prefixed"):
        combine_tutorial_files(out, tmp_path / "decoder-5-3000.ckpt", tmp_path / "d.pth")


@pytest.mark.keras
def test_lstm_rules_drive_keras_lstm():
    """``lstm_to_keras``: a PyTorch LSTM's four tensors loaded into ``keras.layers.LSTM``
    (the gate order kept, the biases summed) give PyTorch's outputs within 1e-5; the way back
    writes Keras's bias into ``bias_ih`` and zeros into ``bias_hh``, the same LSTM."""
    import keras
    import torch

    from weight_convert.layouts.captioner import lstm_from_keras, lstm_to_keras

    keras_on_tensorflow_only(f"keras-{keras.backend.backend()}")  # framework-free rules

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 6, batch_first=True)
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    with torch.no_grad():
        want = lstm(torch.from_numpy(x))[0].numpy()
    tensors = [getattr(lstm, n).detach().numpy() for n in ("weight_ih_l0", "weight_hh_l0")]
    tensors += [getattr(lstm, n).detach().numpy() for n in ("bias_ih_l0", "bias_hh_l0")]
    layer = keras.layers.LSTM(6, return_sequences=True)
    layer.build((2, 4, 5))
    layer.set_weights(list(lstm_to_keras(*tensors)))
    got = keras.ops.convert_to_numpy(layer(x))
    assert np.max(np.abs(got - want)) <= 1e-5
    w_ih, w_hh, b_ih, b_hh = lstm_from_keras(*layer.get_weights())
    assert np.array_equal(w_ih, tensors[0]) and np.array_equal(w_hh, tensors[1])
    assert np.allclose(b_ih, tensors[2] + tensors[3]) and not b_hh.any()


def _calibrated(reference, images: np.ndarray):
    """The tutorial's initialization of ``linear`` / ``embed`` layers and PyTorch's of the
    LSTM, over random ResNet weights, and ``encoder.bn``'s running statistics scaling this
    batch's features to unit size (as a trained model's BatchNorm does): with every tensor
    random the eval-mode statistics leave ResNet-152's features at ~1e3, which saturates the
    LSTM and amplifies float32 rounding to ~1e-3 x std at the logits in both ports alike
    (measured: conditioning, not a port difference)."""
    import torch

    enc, dec = reference.encoder, reference.decoder
    torch.manual_seed(0)
    with torch.no_grad():
        enc.linear.weight.normal_(0.0, 0.02)
        enc.linear.bias.zero_()
        dec.embed.weight.uniform_(-0.1, 0.1)
        dec.linear.weight.uniform_(-0.1, 0.1)
        dec.linear.bias.zero_()
        dec.lstm.reset_parameters()
        features = enc.linear(enc.resnet(torch.from_numpy(images)).flatten(1))
        # scaled by the features' root mean square, not centred: a random ResNet's features
        # barely differ between images, and dividing by their tiny spread amplifies rounding
        enc.bn.running_mean.zero_()
        enc.bn.running_var.copy_(features.square().mean(0))
    return reference


@pytest.mark.slow
def test_resnet152_captioner_full_size(port):
    """The tutorial's model (``captioner_resnet152``: ResNet-152, embed 256, LSTM 512, a
    10000-word vocabulary) on two 224 x 224 images and 12-token captions, eval mode, the
    encoder's BatchNorm1d and the decoder initialized as the tutorial's (``_calibrated``):
    every layer within the whole-model bound (1e-4 x std) of the reference's, every reference
    layer matched."""
    from weight_convert.parity import MODEL_TOLERANCE, compare
    from zoo.configs import resolve

    config = resolve("captioner_resnet152")
    family = TestCaptioner.spec()
    inputs, formats = family.make_inputs(config, (2, 3, 224, 224))
    reference = _calibrated(reference_model(config), inputs[0])
    port_net = port.build_model(config, initialize=False)
    report = compare(reference, port_net, port, inputs, formats, tolerance=MODEL_TOLERANCE)
    assert report.passed, report.table()
    assert not report.unmatched, report.unmatched
    blocks = [e for e in report.layers if e.path.startswith("encoder.resnet.6.")]
    assert sum(e.path.count(".") == 3 for e in blocks) == 36
