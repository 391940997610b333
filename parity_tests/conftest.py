"""Shared fixtures. Keras tests carry the ``keras`` marker: the test command runs them once per
``KERAS_BACKEND`` (tensorflow, jax, torch), each in its own process."""

from __future__ import annotations

import os

import numpy as np
import pytest

# timm and torchvision's video models import triton; importing triton after TensorFlow segfaults
# (TF 2.21 + torch 2.14.1), so the torch-side peers load before any test imports Keras.
import timm.models.swin_transformer  # noqa: F401, I001
import torchvision.models.video.swin_transformer  # noqa: F401

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from family_suite import generate_family_tests  # noqa: E402

PORTS = [pytest.param("keras", marks=pytest.mark.keras), pytest.param("flax")]


@pytest.fixture(params=PORTS)
def port_name(request) -> str:
    return request.param


@pytest.fixture
def port(port_name):
    """The adapter of a port framework (weight_convert.frameworks.<name>_port)."""
    from weight_convert.frameworks import port as get_port

    return get_port(port_name)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state (torch, NumPy, Python): draws the
    tests or the peers' own constructors make without a generator are reproducible."""
    import random

    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pytest_generate_tests(metafunc):
    generate_family_tests(metafunc)  # the shared suite's parameters for each family's class


#: the test files that take the most time (seconds on the TensorFlow pass, two workers), run
#: first: pytest-xdist hands out one file at a time, so the longest go out while the short ones
#: can still fill the other worker. Its default order (most tests first, ``--no-loadscope-
#: reorder`` in scripts/test.sh turns it off) put the six notebooks (~450 s) near the end, with
#: one core idle for about two minutes.
LONGEST_FIRST = (
    "parity_tests/test_notebooks.py",
    "parity_tests/families/test_sam.py",
    "parity_tests/families/test_video_swin.py",
    "parity_tests/test_mask_generator.py",
    "parity_tests/test_sam_shapes.py",
    "parity_tests/families/test_resnet.py",
    "parity_tests/test_models_parity.py",
    "parity_tests/families/test_clip_resnet.py",
    "parity_tests/test_blocks_parity.py",
    "parity_tests/test_style_transfer.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
