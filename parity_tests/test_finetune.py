"""Fine-tuning from converted weights gives the reference's loss curve in every framework.

An official-layout checkpoint (the reference with every parameter random) is converted with
``weight_convert.convert`` to Keras (``.weights.h5``) and Flax (``.safetensors``), loaded into a
model built with the fine-tuning config (dropout and drop path at 0: stochastic training-mode
parity is tested elsewhere; the models still run in training mode) and fine-tuned with the
recipes of ``zoo.finetune`` (PyTorch, a plain loop), ``ports.keras.finetune`` (``model.fit``) and
``ports.flax.finetune`` (an ``nnx.Optimizer`` loop): SGD with momentum, 20 steps, the same
synthetic batches (NumPy, seeded) in every framework. Then:

- the loss of every step equals the reference's within ``FINETUNE_LOSS_TOLERANCE``;
- the fine-tuned model, saved as a user saves it (``model.save`` / ``serialization.save``) and
  converted back to the official layout, equals the reference's fine-tuned weights tensor by
  tensor within ``finetune_weight_bound`` (relative to how far the weights moved);
- that checkpoint loads strictly into the reference, whose outputs equal the fine-tuned
  reference's within ``FINETUNE_OUTPUT_TOLERANCE``.

Tasks: Video Swin (the family's tiny config in CI, ``video_swin_tiny`` under ``slow``) on tiny
clips with cross-entropy, and SAM's mask decoder (the tiny SAM config) on image and prompt
embeddings with binary cross-entropy on the low-res masks.

``ZOO_FINETUNE_CURVES=/tmp/finetune_curves.json bash scripts/test.sh -k finetune`` (and
``... -m slow -k finetune`` for ``video_swin_tiny``) adds every target's per-step losses and
error figures to that JSON, each Keras backend's pass its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from family_suite import default_maker

from weight_convert.tolerance import (
    FINETUNE_LOSS_TOLERANCE,
    FINETUNE_OUTPUT_TOLERANCE,
    finetune_weight_bound,
)
from zoo.configs import resolve
from zoo.registry import FAMILIES
from zoo.tensor_format import Format, to_port_format

STEPS = 20
SEED = 0


@dataclasses.dataclass(frozen=True)
class Task:
    """One fine-tuning run: the model's config, the batches, SGD's settings."""

    id: str
    config: Any
    batch: int
    lr: float
    momentum: float = 0.9
    frames: tuple[int, int, int] = (4, 32, 32)  # Video Swin clips (T, H, W)
    clips: int = 4  # Video Swin: the clips, taken ``batch`` at a time, over and over

    @property
    def family(self) -> str:
        return self.config.family


VIDEO_TINY = Task(
    "video_swin_tiny_config",
    dataclasses.replace(
        FAMILIES["video_swin"].tiny, num_classes=4, drop_path_rate=0.0, head_dropout=0.0
    ),
    batch=2,
    lr=3e-4,
)
VIDEO_SWIN_T = Task(
    "video_swin_tiny",
    resolve("video_swin_tiny", num_classes=4, drop_path_rate=0.0, head_dropout=0.0),
    batch=2,
    lr=1e-4,
)
SAM_DECODER = Task("sam_mask_decoder", FAMILIES["sam"].tiny, batch=2, lr=0.03)

#: Keras's Video Swin recipe on the JAX and torch backends is ``slow`` (CI time: XLA compiles
#: the train step; the SAM decoder's recipe runs on every backend in CI, Video Swin's on TF)
_KERAS_OFF_TF = os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow"

TASKS = [
    pytest.param(VIDEO_TINY, id=VIDEO_TINY.id, marks=[pytest.mark.slow] if _KERAS_OFF_TF else []),
    pytest.param(VIDEO_SWIN_T, id=VIDEO_SWIN_T.id, marks=pytest.mark.slow),
    pytest.param(SAM_DECODER, id=SAM_DECODER.id),
]


# --------------------------------------------------------------------------- synthetic data


def clips(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """``task.clips`` clips (N, 3, T, H, W), reference layout, and their labels: each class a
    fixed random pattern under noise."""
    rng = np.random.default_rng(SEED)
    classes = task.config.num_classes
    patterns = rng.standard_normal((classes, 3, *task.frames), dtype=np.float32)
    labels = rng.integers(0, classes, task.clips)
    noise = rng.standard_normal((len(labels), 3, *task.frames), dtype=np.float32)
    return patterns[labels] + 0.3 * noise, labels.astype(np.int64)


def decoder_batches(task: Task) -> list[dict[str, np.ndarray]]:
    """``STEPS`` batches for SAM's mask decoder, reference layout: one image's embedding and
    positional encoding (1, C, H, W), ``batch`` prompt sets (3 sparse tokens, a dense map) and
    their target masks (B, 1, 4H, 4W): a disk each."""
    rng = np.random.default_rng(SEED)
    c, grid, b = task.config.prompt_embed_dim, task.config.image_embedding_size, task.batch
    side = 4 * grid
    yy, xx = np.mgrid[:side, :side]
    out = []
    for _ in range(STEPS):
        centers = rng.uniform(0.25 * side, 0.75 * side, (b, 2))
        radii = rng.uniform(0.1 * side, 0.3 * side, b)
        dist = np.hypot(yy - centers[:, :1, None], xx - centers[:, 1:, None])
        out.append(
            {
                "image_embeddings": rng.standard_normal((1, c, grid, grid), dtype=np.float32),
                "image_pe": rng.standard_normal((1, c, grid, grid), dtype=np.float32),
                "sparse_prompt_embeddings": rng.standard_normal((b, 3, c), dtype=np.float32),
                "dense_prompt_embeddings": 0.1
                * rng.standard_normal((b, c, grid, grid), dtype=np.float32),
                "masks": (dist <= radii[:, None, None])[:, None].astype(np.float32),
            }
        )
    return out


def port_batches(batches: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The decoder batches channels-last, as the ports take them."""
    return [
        {k: v if v.ndim < 4 else to_port_format(v, Format.CHANNELS_FIRST) for k, v in b.items()}
        for b in batches
    ]


# --------------------------------------------------------------------------- the runs


def load_reference(path: str, config: Any):
    """The reference model with the weights of an official-layout checkpoint (read by the
    converter, loaded strictly)."""
    import zoo.models
    from weight_convert.frameworks import reference
    from weight_convert.verification import read_torch_file

    model = zoo.models.build_model(config)
    reference.load_state_dict(model, read_torch_file(path, "official", config))
    return model


def reference_outputs(model, task: Task) -> np.ndarray:
    """The model's inference outputs on the task's first batch (logits, or the decoder's
    single-mask logits)."""
    import torch

    import zoo.finetune

    model.eval()
    with torch.no_grad():
        if task.family == "sam":
            return zoo.finetune.mask_logits(model.mask_decoder, decoder_batches(task)[0]).numpy()
        x, _ = clips(task)
        return model(torch.from_numpy(x[: task.batch])).numpy()


def run_reference(task: Task, model) -> list[float]:
    import zoo.finetune
    from weight_convert.frameworks import reference

    with reference.numerics():
        if task.family == "sam":
            return zoo.finetune.finetune_mask_decoder(
                model.mask_decoder, decoder_batches(task), lr=task.lr, momentum=task.momentum
            )
        x, y = clips(task)
        return zoo.finetune.finetune_classifier(
            model, x, y, batch_size=task.batch, steps=STEPS, lr=task.lr, momentum=task.momentum
        )


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """Per task, once per process: the official checkpoint and the reference fine-tuned from
    it (its loss curve, weights before and after, outputs after)."""
    from weight_convert.frameworks import reference

    runs: dict[str, dict[str, Any]] = {}

    def get(task: Task) -> dict[str, Any]:
        if task.id not in runs:
            root = tmp_path_factory.mktemp(task.id)
            checkpoint = default_maker("official", task.family)(root / "official", task.config, 0)
            model = load_reference(checkpoint, task.config)
            before = reference.state_dict(model)
            losses = run_reference(task, model)
            runs[task.id] = {
                "checkpoint": checkpoint,
                "losses": losses,
                "before": before,
                "after": reference.state_dict(model),
                "outputs": reference_outputs(model, task),
            }
        return runs[task.id]

    return get


def run_keras(task: Task, checkpoint: str, root: Path) -> tuple[list[float], str]:
    """Convert the checkpoint to Keras, fine-tune with ``model.fit``, ``model.save``: the loss
    curve and the saved ``.keras`` file."""
    import ports.keras.finetune
    from weight_convert import convert
    from weight_convert.frameworks import port
    from zoo import compat

    convert.convert(checkpoint, "keras", root / "converted")
    # a user builds it with ``ports.keras.models.create_model``; here without initial values (on
    # JAX each initializer compiles once per shape), as the converter reads Keras files
    model = port("keras").build_model(task.config, initialize=False)
    model.load_weights(root / "converted.weights.h5")
    compat.keras_settle(model.weights)
    with port("keras").numerics():
        if task.family == "sam":
            batches = port_batches(decoder_batches(task))
            losses = ports.keras.finetune.fit_mask_decoder(
                model.mask_decoder, batches, lr=task.lr, momentum=task.momentum
            )
        else:
            x, y = clips(task)
            losses = ports.keras.finetune.fit_classifier(
                model,
                to_port_format(x, Format.CHANNELS_FIRST),
                y,
                batch_size=task.batch,
                steps=STEPS,
                lr=task.lr,
                momentum=task.momentum,
            )
    saved = root / "fine_tuned.keras"
    model.save(saved)
    return losses, str(saved)


def run_flax(task: Task, checkpoint: str, root: Path) -> tuple[list[float], str]:
    """Convert the checkpoint to Flax, fine-tune with an ``nnx.Optimizer`` loop,
    ``serialization.save``: the loss curve and the saved ``.safetensors`` file."""
    import ports.flax.finetune
    from ports.flax import serialization
    from ports.flax.models import abstract_model
    from weight_convert import convert
    from weight_convert.frameworks import port

    convert.convert(checkpoint, "flax", root / "converted")
    model = abstract_model(task.config)
    serialization.load_weights(model, root / "converted.safetensors")
    with port("flax").numerics():
        if task.family == "sam":
            batches = port_batches(decoder_batches(task))
            losses = ports.flax.finetune.finetune_mask_decoder(
                model.mask_decoder, batches, lr=task.lr, momentum=task.momentum
            )
        else:
            x, y = clips(task)
            losses = ports.flax.finetune.finetune_classifier(
                model,
                to_port_format(x, Format.CHANNELS_FIRST),
                y,
                batch_size=task.batch,
                steps=STEPS,
                lr=task.lr,
                momentum=task.momentum,
            )
    saved = root / "fine_tuned.safetensors"
    serialization.save(model, saved)
    return losses, str(saved)


def record(task: Task, target: str, reference: list[float], figures: dict[str, Any]) -> None:
    """Add the target's curve and figures to the JSON file ``ZOO_FINETUNE_CURVES`` names
    (nothing when unset): ``{task: {"steps", "lr", "momentum", "torch": [losses], target:
    {"losses": [...], "loss_error": ..., ...}}}``."""
    path = os.environ.get("ZOO_FINETUNE_CURVES")
    if not path:
        return
    data = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    entry = data.setdefault(task.id, {"steps": STEPS, "lr": task.lr, "momentum": task.momentum})
    entry["torch"] = reference
    entry[target] = figures
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


@pytest.mark.parametrize("task", TASKS)
def test_finetune(task: Task, port_name: str, fine_tuned, tmp_path):
    from weight_convert import convert
    from weight_convert.frameworks import port
    from weight_convert.frameworks.reference import state_dict

    ref = fine_tuned(task)
    runner = run_keras if port_name == "keras" else run_flax
    losses, saved = runner(task, ref["checkpoint"], tmp_path)
    target = port(port_name).NAME
    # the fine-tuned weights, converted back to the official layout, in the reference
    back = tmp_path / "back.pth"
    convert.convert(saved, "torch", back)
    model = load_reference(str(back), task.config)
    weights = state_dict(model)
    outputs = reference_outputs(model, task)

    loss_errors = [abs(a - b) for a, b in zip(losses, ref["losses"], strict=True)]
    loss_bounds = [FINETUNE_LOSS_TOLERANCE.bound(np.array(b)) for b in ref["losses"]]
    moved = {k: ref["after"][k] - ref["before"][k] for k in ref["after"]}
    largest = max(float(np.max(np.abs(m))) for m in moved.values())
    weight_errors = {k: float(np.max(np.abs(weights[k] - v))) for k, v in ref["after"].items()}
    weight_bounds = {
        k: finetune_weight_bound(m, ref["after"][k], largest, STEPS) for k, m in moved.items()
    }
    worst = max(weight_errors, key=lambda k: weight_errors[k] / weight_bounds[k])
    output_error = float(np.max(np.abs(outputs - ref["outputs"])))
    output_bound = FINETUNE_OUTPUT_TOLERANCE.bound(ref["outputs"])
    record(
        task,
        target,
        ref["losses"],
        {
            "losses": losses,
            "loss_error": max(loss_errors),
            "loss_error_relative": max(np.divide(loss_errors, np.abs(ref["losses"]))),
            "largest_weight_move": largest,
            "weight_worst": worst,
            "weight_worst_error": weight_errors[worst],
            "weight_worst_bound": weight_bounds[worst],
            "weight_error_relative_to_largest_move": max(weight_errors.values()) / largest,
            "output_error_relative_to_std": output_error / float(np.std(ref["outputs"])),
        },
    )

    # the loss of every step
    assert len(losses) == len(ref["losses"]) == STEPS
    bad = [
        (k, e, b) for k, (e, b) in enumerate(zip(loss_errors, loss_bounds, strict=True)) if e > b
    ]
    assert not bad, f"{target}: steps (step, |loss - reference|, bound) above the bound: {bad}"
    # the first and last 4 steps (two passes over the clips)
    assert sum(ref["losses"][-4:]) < sum(ref["losses"][:4]), f"nothing learned: {ref['losses']}"
    # every tensor after fine-tuning
    bad = [(k, e, weight_bounds[k]) for k, e in weight_errors.items() if e > weight_bounds[k]]
    assert not bad, f"{target}: tensors (key, max |error|, bound) above the bound: {bad}"
    # the reference holding them computes the fine-tuned reference's outputs
    assert output_error <= output_bound, (
        f"{target}: outputs {output_error:.3g} off ({output_bound:.3g})"
    )
