"""The CNN-LSTM captioner in the shared suite (tiny: one-block Bottleneck stages, a two-layer
LSTM), and what is particular to it: packing (logits on padded batches of unequal lengths in
``pack_padded_sequence``'s order, nothing read from padding), greedy decoding in the three
frameworks, the vocabulary, the LSTM's layout and the tutorial's two files. One training step:
test_captioner_training.py."""

from __future__ import annotations

import numpy as np
import pytest
from family_suite import FamilySuite, ParityCase, port_model, reference_model
from stochastic import without_randomness

from weight_convert.tolerance import Tolerance


class TestCaptioner(FamilySuite):
    family = "captioner"
    cases = (
        ParityCase("b2-32", (2, 3, 32, 32)),
        ParityCase("b3-odd-29x35", (3, 3, 29, 35)),
    )

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
