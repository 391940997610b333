"""Time per style-transfer step: the peers' own PyTorch models (torchvision's ``vgg19``,
open_clip's ``RN50`` and ``ViT-B-16`` image towers, features read by forward hooks, the same loss:
``zoo.style_transfer.style_loss``), the zoo's reference, Keras (the ``KERAS_BACKEND`` of this
process) and Flax, from one run, printed as ratios to the peer. Random weights (nothing is
downloaded); each framework's time is the median of its steps after the first (which compiles).

    python scripts/style_benchmark.py [--steps 4] [--backbones vgg19 clip_rn50 clip_vit_b16]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402  (before TensorFlow)
import torch._dynamo  # noqa: E402, F401

from weight_convert import transfer  # noqa: E402
from weight_convert.frameworks import port  # noqa: E402
from zoo import style_transfer  # noqa: E402
from zoo.configs import resolve  # noqa: E402
from zoo.models import build_model  # noqa: E402
from zoo.style import StyleSettings, images, normalization_of, seconds_per_step  # noqa: E402
from zoo.training import torch_optimizer  # noqa: E402

VIT_BLOCKS = tuple(f"transformer.resblocks.{i}" for i in (0, 2, 4, 6, 8))
#: backbone -> (variant, size, content layers, style layers, peer)
CASES = {
    "vgg19": (
        "vgg19",
        224,
        ("conv4_2",),
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        "torchvision",
    ),
    "clip_rn50": ("clip_rn50", 224, ("layer3",), ("layer1", "layer2", "layer3", "layer4"), "RN50"),
    "clip_vit_b16": (
        "clip_vit_b16",
        224,
        ("transformer.resblocks.8",),
        VIT_BLOCKS,
        "ViT-B-16",
    ),
}


def peer_model(name: str, peer: str) -> torch.nn.Module:
    """The peer's module whose state dict loads into the zoo's reference of ``name``."""
    torch.manual_seed(0)
    if peer == "torchvision":
        import torchvision

        return torchvision.models.vgg19(weights=None).eval()
    import open_clip

    return open_clip.create_model(peer, pretrained=None).visual.eval()


def peer_seconds(peer: torch.nn.Module, paths: dict[str, str], content, style, settings, steps):
    """The peer's step: features by forward hooks at the reference's module paths (tokens put
    batch-first where the peer runs sequence-first), the zoo's loss, ``torch.optim.Adam``."""
    store: dict[str, torch.Tensor] = {}
    modules = dict(peer.named_modules())
    tokens = None

    def hook(name):
        def fn(module, args, out):
            out = out[0] if isinstance(out, tuple) else out
            if out.ndim == 3 and tokens is not None and out.shape[0] == tokens:
                out = out.transpose(0, 1)  # sequence-first (L, N, D) -> (N, L, D)
            store[name] = out

        return fn

    for name, path in paths.items():
        modules[path].register_forward_hook(hook(name))
    if hasattr(peer, "positional_embedding"):
        tokens = peer.positional_embedding.shape[0]
    order, a, b = settings.normalization.affine()
    a, b = torch.from_numpy(a), torch.from_numpy(b)

    def feats(x):
        store.clear()
        peer((x[..., order.tolist()] * a + b).permute(0, 3, 1, 2))
        return dict(store)

    for p in peer.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        target = feats(torch.from_numpy(content[None]))
        grams = {n: style_transfer.gram(v) for n, v in feats(torch.from_numpy(style[None])).items()}
    image = torch.from_numpy(content[None].copy()).requires_grad_(True)
    optimizer = torch_optimizer(settings.optimizer, [image])
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        style_transfer.style_loss(feats(image), target, grams, image, settings).backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--backbones", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    import keras
    from skimage import data, transform

    import ports.flax.style_transfer as flax_style
    import ports.keras.style_transfer as keras_style

    runners = {
        "reference": style_transfer.transfer,
        f"keras-{keras.backend.backend()}": keras_style.transfer,
        "flax": flax_style.transfer,
    }
    print(f"CPU threads: torch {torch.get_num_threads()}; steps per run {args.steps}")
    print(f"{'backbone':13s} {'peer':>12s} " + " ".join(f"{n:>19s}" for n in runners))
    for name in args.backbones:
        variant, size, content_layers, style_layers, peer_name = CASES[name]
        config = resolve(variant, features=tuple(dict.fromkeys((*content_layers, *style_layers))))
        if hasattr(config, "features_only"):
            config = resolve(config, features_only=True)
        settings = StyleSettings(
            content_layers, style_layers, steps=args.steps, normalization=normalization_of(config)
        )
        photos = [
            transform.resize(p, (size, size), anti_aliasing=True).astype(np.float32)
            for p in (data.astronaut(), data.coffee())
        ]
        content, style, _ = images(*photos, None)
        peer = peer_model(name, peer_name)
        reference = build_model(config)
        weights = {k: v for k, v in peer.state_dict().items() if k in reference.state_dict()}
        reference.load_state_dict(weights, strict=True)
        paths = {n: config_path(config, n) for n in settings.layers}
        times = {"peer": peer_seconds(peer, paths, content, style, settings, args.steps)}
        numpy_weights = {k: v.numpy() for k, v in reference.state_dict().items()}
        for label, run in runners.items():
            model = reference if label == "reference" else _port(label, config, size, numpy_weights)
            times[label] = seconds_per_step(run, model, content, style, settings, args.steps)
        row = " ".join(
            f"{times[n] * 1e3:9.0f} ms {times[n] / times['peer']:5.2f}x" for n in runners
        )
        print(f"{name:13s} {times['peer'] * 1e3:9.0f} ms {row}")


def config_path(config, name: str) -> str:
    """The module path a feature name stands for (VGG's Gatys aliases: ``features.N``)."""
    from zoo.configs import family_of

    module = __import__(f"zoo.families.{family_of(config).name}", fromlist=["feature_paths"])
    if hasattr(module, "feature_paths"):
        return module.feature_paths(config).get(name, name)
    return name


def _port(label: str, config, size: int, weights):
    adapter = port(label.split("-")[0])
    model = adapter.build_model(config, initialize=False)
    adapter.materialize(model, [np.zeros((1, size, size, 3), np.float32)], initialize=False)
    adapter.assign(model, transfer.to_port(weights, adapter.shapes(model)))
    return model


if __name__ == "__main__":
    main()
