"""SAM's prompt encoder and mask decoder configurations and prompts, shared by
test_sam_parts_peers.py (reference vs segment-anything) and test_sam_parts_ports.py (ports vs
reference); the tiny whole SAM of the predictor and mask-generator tests."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from zoo.registry import FAMILIES
from zoo.tensor_format import Format

__all__ = [
    "FULL",
    "SMALL",
    "TINY_SAM",
    "Sizes",
    "official_and_reference",
    "prompt_formats",
    "prompts",
    "split",
]

#: the family's tiny config with a third block: two global blocks (128 input, 8 x 8 embedding
#: grid, window 3: padded), decoder at width 32, 32 x 32 low-res masks
TINY_SAM = dataclasses.replace(
    FAMILIES["sam"].tiny, encoder_depth=3, encoder_global_attn_indexes=(1, 2)
)


def official_and_reference(config=TINY_SAM, seed: int = 3):
    """(segment-anything's ``Sam``, our reference ``Sam``) holding the same random weights, every
    tensor randomized."""
    import checkpoint_factory as factory

    from weight_convert.frameworks import reference as ref_fw
    from zoo.models import Sam

    official = ref_fw.randomize_(factory.official_sam_module(config), seed=seed)
    ours = Sam(config).eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours


@dataclass(frozen=True)
class Sizes:
    """One SAM head configuration; ``full`` is the official one (all three ViT sizes)."""

    embed_dim: int = 256
    embedding_hw: tuple[int, int] = (64, 64)
    input_hw: tuple[int, int] = (1024, 1024)
    mask_in_chans: int = 16
    depth: int = 2
    heads: int = 8
    mlp_dim: int = 2048
    iou_hidden: int = 256
    multimask: int = 3

    def prompt_kwargs(self) -> dict:
        return dict(
            embed_dim=self.embed_dim,
            image_embedding_size=self.embedding_hw,
            input_image_size=self.input_hw,
            mask_in_chans=self.mask_in_chans,
        )

    def decoder_kwargs(self) -> dict:
        return dict(
            transformer_dim=self.embed_dim,
            num_multimask_outputs=self.multimask,
            iou_head_depth=3,
            iou_head_hidden_dim=self.iou_hidden,
            transformer_depth=self.depth,
            transformer_num_heads=self.heads,
            transformer_mlp_dim=self.mlp_dim,
        )


FULL = Sizes()
# Non-square embedding grid, small widths.
SMALL = Sizes(32, (6, 10), (96, 160), 16, 2, 4, 64, 32, 3)


def prompts(sizes: Sizes, kinds: tuple[str, ...], batch: int, n_points: int, seed: int):
    """Reference-layout numpy inputs for ``kinds``: coords, labels, boxes, masks (B, 1, 4H, 4W)."""
    rng = np.random.default_rng(seed)
    h, w = sizes.input_hw
    arrays = []
    if "points" in kinds:
        coords = rng.uniform(0, 1, (batch, n_points, 2)) * np.array([w, h])
        labels = rng.integers(-1, 2, (batch, n_points))
        labels[:, 0], labels[:, -1] = 1, 0  # both polarities in every prompt set
        arrays += [coords.astype(np.float32), labels.astype(np.int32)]
    if "boxes" in kinds:
        corners = np.sort(rng.uniform(0, 1, (batch, 2, 2)), axis=1) * np.array([w, h])
        arrays.append(corners.reshape(batch, 4).astype(np.float32))
    if "masks" in kinds:
        mh, mw = (4 * s for s in sizes.embedding_hw)
        arrays.append(rng.standard_normal((batch, 1, mh, mw), dtype=np.float32))
    return arrays


def split(kinds: tuple[str, ...], arrays):
    """(points, boxes, masks) from the positional inputs the harness passes, None where absent."""
    arrays = list(arrays)
    points = (arrays.pop(0), arrays.pop(0)) if "points" in kinds else None
    boxes = arrays.pop(0) if "boxes" in kinds else None
    masks = arrays.pop(0) if "masks" in kinds else None
    return points, boxes, masks


def prompt_formats(kinds: tuple[str, ...]) -> list[Format]:
    """Reference layouts of the ``_prompts`` arrays: only the masks are channels-first maps."""
    per_kind = {"points": ["channels_last"] * 2, "boxes": ["channels_last"]}
    per_kind["masks"] = ["channels_first"]
    return [Format(x) for k in kinds for x in per_kind[k]]
