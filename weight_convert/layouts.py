"""Checkpoint layouts of every family (Swin 2D, Video Swin, SAM, SAM's image encoder alone,
ViTDet): detection from key names and shapes, and renaming to and from the reference's keys.
Framework-free: NumPy only.

A *layout* is how one code base names the tensors of the same architecture:

``official``
    microsoft/Swin-Transformer (2D; ``{'model': sd}``) and SwinTransformer/Video-Swin-Transformer
    (mmaction style, ``{'meta': ..., 'state_dict': sd}`` with ``backbone.*`` / ``cls_head.*``).
    These are the reference's own keys, plus buffers derived from the window
    (``relative_position_index``; ``attn_mask`` in 2D) that are checked and dropped.
``torchvision``
    ``torchvision.models.swin_t/s/b`` and ``torchvision.models.video.swin3d_t/s/b``.
``timm``
    timm >= 0.9 ``swin_*`` (2D only): the patch merging sits at the *start* of stage i >= 1 and the
    classifier is ``head.fc``. timm ``samvit_*``: SAM's image encoder with ``mlp.fc1`` / ``fc2``
    (a classifier ``head.*``, where there is one, is dropped). timm builds its blocks with
    LayerNorm eps 1e-5 and resizes ``pos_embed`` (antialiased bicubic) at other grids; the
    converted model runs as SAM does (eps 1e-6, 64 x 64 grid).
``official`` (SAM)
    The ``segment-anything`` package's ``Sam`` state dict (``image_encoder.*``,
    ``prompt_encoder.*``, ``mask_decoder.*``): the reference's own keys.
``detectron2``
    ViTDet Mask R-CNN / Cascade checkpoints: the backbone under ``backbone.net.*`` and
    ``backbone.simfp_*``; the detector heads (``proposal_generator.*``, ``roi_heads.*``) and the
    pixel statistics are outside the backbone and are dropped, each counted in the notes.

The correspondence lives in ``RULES``: ordered pairs of key-prefix templates (reference, layout),
used in both directions. A template may hold stage / block indices as ``{i}``, ``{j}`` or a linear
form such as ``{2i+1}``; the first rule whose template matches a key decides its name. A rule
whose reference side is None marks keys outside the reference model (dropped, and reported).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from weight_convert.errors import (
    LayoutError,
    MissingKeysError,
    ShapeMismatchError,
    UnexpectedKeysError,
)
from zoo.configs import (
    VARIANTS,
    Config,
    arch_fields,
    config_to_dict,
    match_variant,
    reference_shapes,
)
from zoo.families.sam import SamConfig
from zoo.families.swin import SwinConfig
from zoo.families.video_swin import VideoSwinConfig
from zoo.families.vitdet import ViTDetConfig
from zoo.windows import relative_position_index, shifted_window_mask

__all__ = [
    "arch_fields",
    "FAMILIES",
    "LAYOUTS",
    "RULES",
    "Detected",
    "LayoutError",
    "describe",
    "detect",
    "from_reference",
    "infer_config",
    "match_variant",
    "reference_shapes",
    "to_reference",
]

LAYOUTS = ("official", "torchvision", "timm", "detectron2")
FAMILIES = ("swin", "video_swin", "sam", "sam_image_encoder", "vitdet")

#: Leaf names of buffers derived from the window (or the training resolution); never learned.
DERIVED = ("relative_position_index", "attn_mask")

_BLOCK = "layers.{i}.blocks.{j}."
_V = "backbone."

#: (layout, family) -> ordered (reference prefix, layout prefix) pairs; first match wins, so the
#: more specific templates come first. Every key of a checkpoint must match one of them.
RULES: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("official", "swin"): (
        ("patch_embed.", "patch_embed."),
        (_BLOCK, _BLOCK),
        ("layers.{i}.downsample.", "layers.{i}.downsample."),
        ("norm.", "norm."),
        ("head.", "head."),
    ),
    ("official", "video_swin"): (
        (_V + "patch_embed.", _V + "patch_embed."),
        (_V + _BLOCK, _V + _BLOCK),
        (_V + "layers.{i}.downsample.", _V + "layers.{i}.downsample."),
        (_V + "norm.", _V + "norm."),
        ("cls_head.fc_cls.", "cls_head.fc_cls."),
    ),
    ("torchvision", "swin"): (
        ("patch_embed.proj.", "features.0.0."),
        ("patch_embed.norm.", "features.0.2."),
        (_BLOCK + "mlp.fc1.", "features.{2i+1}.{j}.mlp.0."),
        (_BLOCK + "mlp.fc2.", "features.{2i+1}.{j}.mlp.3."),
        (_BLOCK, "features.{2i+1}.{j}."),
        ("layers.{i}.downsample.", "features.{2i+2}."),
        ("norm.", "norm."),
        ("head.", "head."),
    ),
    ("torchvision", "video_swin"): (
        (_V + "patch_embed.", "patch_embed."),
        (_V + _BLOCK + "mlp.fc1.", "features.{2i}.{j}.mlp.0."),
        (_V + _BLOCK + "mlp.fc2.", "features.{2i}.{j}.mlp.3."),
        (_V + _BLOCK, "features.{2i}.{j}."),
        (_V + "layers.{i}.downsample.", "features.{2i+1}."),
        (_V + "norm.", "norm."),
        ("cls_head.fc_cls.", "head."),
    ),
    ("timm", "swin"): (
        ("patch_embed.", "patch_embed."),
        (_BLOCK, _BLOCK),
        ("layers.{i}.downsample.", "layers.{i+1}.downsample."),
        ("norm.", "norm."),
        ("head.", "head.fc."),
    ),
    ("official", "sam"): (
        ("image_encoder.", "image_encoder."),
        ("prompt_encoder.", "prompt_encoder."),
        ("mask_decoder.", "mask_decoder."),
    ),
    ("timm", "sam_image_encoder"): (
        ("pos_embed", "pos_embed"),
        ("patch_embed.", "patch_embed."),
        ("blocks.{j}.mlp.lin1.", "blocks.{j}.mlp.fc1."),
        ("blocks.{j}.mlp.lin2.", "blocks.{j}.mlp.fc2."),
        ("blocks.{j}.", "blocks.{j}."),
        ("neck.", "neck."),
        (None, "head."),  # a classifier (samvit_*_224): not part of SAM's encoder
    ),
    ("detectron2", "vitdet"): (
        ("net.", "backbone.net."),
        ("simfp_{i}.", "backbone.simfp_{i}."),
        (None, "proposal_generator."),
        (None, "roi_heads."),
        (None, "pixel_mean"),
        (None, "pixel_std"),
    ),
}

#: Derived buffers each layout writes in ``from_reference`` (official 2D checkpoints also carry
#: ``attn_mask`` for the shifted blocks at the training resolution).
_WRITES = {
    ("official", "swin"): ("relative_position_index", "attn_mask"),
    ("official", "video_swin"): ("relative_position_index",),
    ("torchvision", "swin"): ("relative_position_index",),
    ("torchvision", "video_swin"): ("relative_position_index",),
    ("timm", "swin"): (),
    ("official", "sam"): (),
    ("timm", "sam_image_encoder"): (),
    ("detectron2", "vitdet"): (),
}


@dataclass(frozen=True)
class Allow:
    """Deliberate exceptions to strict coverage (``--allow-missing`` / ``--allow-unused``):
    fnmatch patterns matched against a key in the checkpoint's layout or in the reference's
    names."""

    missing: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()

    @staticmethod
    def _match(names: Iterable[str], patterns: Iterable[str]) -> bool:
        return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)

    def allows_missing(self, *names: str) -> bool:
        return self._match(names, self.missing)

    def allows_unused(self, *names: str) -> bool:
        return self._match(names, self.unused)


STRICT = Allow()


# --------------------------------------------------------------------------- templates


_PLACEHOLDER = re.compile(r"\{(\d*)([ij])(?:\+(\d+))?\}")


@dataclass(frozen=True)
class _Template:
    regex: re.Pattern
    slots: tuple[tuple[int, str, int], ...]  # (a, var, b): the number is a * var + b
    parts: tuple[str, ...]  # literal text around the slots, len(slots) + 1 entries

    def match(self, key: str) -> tuple[dict[str, int], str] | None:
        """Index values and the rest of the key, or None."""
        m = self.regex.match(key)
        if m is None:
            return None
        values: dict[str, int] = {}
        for (a, var, b), text in zip(self.slots, m.groups(), strict=True):
            n = int(text)
            if n < b or (n - b) % a:
                return None
            v = (n - b) // a
            if values.setdefault(var, v) != v:
                return None
        return values, key[m.end() :]

    def render(self, values: Mapping[str, int], rest: str) -> str:
        out = [self.parts[0]]
        for (a, var, b), text in zip(self.slots, self.parts[1:], strict=True):
            out += [str(a * values[var] + b), text]
        return "".join(out) + rest


@cache
def _template(text: str) -> _Template:
    slots, parts, pattern, pos = [], [], "", 0
    for m in _PLACEHOLDER.finditer(text):
        parts.append(text[pos : m.start()])
        pattern += re.escape(text[pos : m.start()]) + r"(\d+)"
        slots.append((int(m.group(1) or 1), m.group(2), int(m.group(3) or 0)))
        pos = m.end()
    parts.append(text[pos:])
    pattern += re.escape(text[pos:])
    return _Template(re.compile(pattern), tuple(slots), tuple(parts))


_DROPPED = ""  # ``_rename`` result for a key a rule marks as outside the reference model


def _rename(key: str, rules: Iterable[tuple[str | None, str]], reverse: bool) -> str | None:
    """Layout key -> reference key (``reverse=False``) or back; None when no rule matches,
    ``_DROPPED`` for a layout key outside the reference model."""
    for ours, theirs in rules:
        if ours is None:
            if not reverse and key.startswith(theirs):
                return _DROPPED
            continue
        src, dst = (ours, theirs) if reverse else (theirs, ours)
        hit = _template(src).match(key)
        if hit is not None:
            return _template(dst).render(*hit)
    return None


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _map_keys(
    keys: Iterable[str], layout: str, family: str
) -> tuple[dict[str, str], list[str], list[str]]:
    """Layout key -> reference key for every key a rule covers, the keys none covers, and the
    keys a rule marks as outside the reference model."""
    rules = RULES[(layout, family)]
    mapping, unmatched, dropped = {}, [], []
    for key in keys:
        new = _rename(key, rules, reverse=False)
        if new is None:
            unmatched.append(key)
        elif new == _DROPPED:
            dropped.append(key)
        else:
            mapping[key] = new
    return mapping, unmatched, dropped


def _dropped_note(dropped: list[str]) -> str:
    groups: dict[str, int] = {}
    for key in dropped:
        groups[key.split(".", 1)[0]] = groups.get(key.split(".", 1)[0], 0) + 1
    parts = ", ".join(f"{name} ({n})" for name, n in groups.items())
    return f"{len(dropped)} tensor(s) outside the model dropped: {parts}"


# --------------------------------------------------------------------------- shapes and configs


def _prefix(family: str) -> str:
    return _V if family == "video_swin" else ""


def _head(family: str) -> str:
    return "cls_head.fc_cls." if family == "video_swin" else "head."


def _index_matrix(index: np.ndarray) -> np.ndarray | None:
    """A relative_position_index as (N, N): official / torchvision 3D store it so, torchvision 2D
    flattened."""
    index = np.asarray(index)
    if index.ndim == 2 and index.shape[0] == index.shape[1]:
        return index
    if index.ndim == 1:
        n = int(round(index.size**0.5))
        if n * n == index.size:
            return index.reshape(n, n)
    return None


#: Windows of the released Video Swin models, preferred when the bias table alone is ambiguous.
_OFFICIAL_3D_WINDOWS = ((8, 7, 7), (16, 7, 7))


def _infer_window(rank: int, rows: int, index: np.ndarray | None, where: str) -> tuple[tuple, str]:
    """Window from the bias-table rows (and the index's size when present) and a note."""
    if rank == 2:
        s = int(round(rows**0.5))
        if s * s != rows or s % 2 == 0:
            raise LayoutError(
                f"{where}: {rows} bias-table rows are not (2w-1)^2 for a square window"
            )
        return ((s + 1) // 2,) * 2, ""
    n = None if index is None or _index_matrix(index) is None else _index_matrix(index).shape[0]
    found = []
    h = 2
    while (2 * h - 1) ** 2 <= rows:
        q, r = divmod(rows, (2 * h - 1) ** 2)
        if r == 0 and q % 2 == 1:
            win = ((q + 1) // 2, h, h)
            if n is None or int(np.prod(win)) == n:
                found.append(win)
        h += 1
    if len(found) == 1:
        note = "" if n is not None else f"window {found[0]} solved from the bias-table rows"
        return found[0], note
    official = [w for w in found if w in _OFFICIAL_3D_WINDOWS]
    if n is None and len(official) == 1:
        others = [w for w in found if w != official[0]]
        return official[0], f"window {official[0]} assumed (bias-table rows also fit {others})"
    raise LayoutError(
        f"{where}: cannot tell the 3D window from {rows} bias-table rows"
        + (f" and {n} tokens per window" if n else "")
        + f" (candidates {found or 'none'})"
    )


def infer_config(reference: Mapping[str, np.ndarray], family: str) -> tuple[Config, list[str]]:
    """Config of a state dict in the reference's keys (derived buffers may be present), from the
    tensor shapes only, and notes. The result is not yet checked against every shape."""
    if family in ("sam", "sam_image_encoder"):
        return _infer_sam(reference, encoder_only=family == "sam_image_encoder")
    if family == "vitdet":
        return _infer_vitdet(reference)
    return _infer_swin(reference, family)


def _indices(reference: Mapping[str, Any], prefix: str) -> list[int]:
    """Sorted distinct n of keys ``{prefix}{n}.*``."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in reference if (m := pattern.match(k))})


def _need(reference: Mapping[str, Any], key: str) -> np.ndarray:
    if key not in reference:
        raise LayoutError(f"no {key}")
    return reference[key]


def _vit_blocks(
    reference: Mapping[str, Any], p: str, dim: int, grid: int | None, default_window: int
) -> tuple[int, int | None, int, list[int], list[str]]:
    """(depth, heads or None, window, global block indexes, notes) of ViTDet-style blocks from
    their relative-position tables: a global block's table spans the whole token grid."""
    blocks = _indices(reference, p + "blocks.")
    if not blocks or blocks != list(range(len(blocks))):
        raise LayoutError(f"no contiguous {p}blocks.N")
    sizes = []
    for j in blocks:
        table = reference.get(f"{p}blocks.{j}.attn.rel_pos_h")
        sizes.append(None if table is None else (int(table.shape[0]) + 1) // 2)
    if all(s is None for s in sizes):
        return len(blocks), None, default_window, [], ["no relative positions: heads assumed"]
    head_dim = int(next(reference[f"{p}blocks.{j}.attn.rel_pos_h"] for j in blocks).shape[1])
    distinct = sorted(set(sizes))
    notes = []
    if grid is None:
        grid = distinct[-1]
    windows = [s for s in distinct if s != grid]
    if len(windows) > 1:
        raise LayoutError(f"relative-position tables of {len(distinct)} sizes {distinct}")
    window = windows[0] if windows else default_window
    if not windows and grid != default_window:
        notes.append("every block attends globally")
    if grid == window:
        raise LayoutError(f"window {window} equals the token grid: cannot tell global blocks")
    global_blocks = [j for j, s in zip(blocks, sizes, strict=True) if s == grid]
    return len(blocks), dim // head_dim, window, global_blocks, notes


def _infer_sam(
    reference: Mapping[str, np.ndarray], encoder_only: bool
) -> tuple[SamConfig, list[str]]:
    p = "" if encoder_only else "image_encoder."
    proj = _need(reference, p + "patch_embed.proj.weight")
    if proj.ndim != 4:
        raise LayoutError(f"patch embedding kernel {tuple(proj.shape)} is not 2D")
    e, patch = int(proj.shape[0]), int(proj.shape[2])
    pos = reference.get(p + "pos_embed")
    grid = None if pos is None else int(pos.shape[1])
    base = SamConfig()
    depth, heads, window, global_blocks, notes = _vit_blocks(
        reference, p, e, grid, base.window_size
    )
    if grid is None:
        grid = base.image_embedding_size
    lin1 = _need(reference, p + "blocks.0.mlp.lin1.weight")
    neck = _need(reference, p + "neck.0.weight")
    fields: dict[str, Any] = dict(
        img_size=grid * patch,
        patch_size=patch,
        in_chans=int(proj.shape[1]),
        encoder_embed_dim=e,
        encoder_depth=depth,
        encoder_num_heads=heads or base.encoder_num_heads,
        encoder_global_attn_indexes=tuple(global_blocks),
        window_size=window,
        mlp_ratio=float(lin1.shape[0]) / e,
        qkv_bias=p + "blocks.0.attn.qkv.bias" in reference,
        use_abs_pos=pos is not None,
        use_rel_pos=p + "blocks.0.attn.rel_pos_h" in reference,
        out_chans=int(neck.shape[0]),
        encoder_only=encoder_only,
    )
    if not encoder_only:
        d = "mask_decoder."
        q = _need(reference, d + "transformer.layers.0.cross_attn_token_to_image.q_proj.weight")
        iou = _indices(reference, d + "iou_prediction_head.layers.")
        fields.update(
            mask_in_chans=int(
                _need(reference, "prompt_encoder.mask_downscaling.3.weight").shape[0]
            ),
            num_multimask_outputs=int(_need(reference, d + "mask_tokens.weight").shape[0]) - 1,
            iou_head_depth=len(iou),
            iou_head_hidden_dim=int(
                _need(reference, d + "iou_prediction_head.layers.0.weight").shape[0]
            ),
            transformer_depth=len(_indices(reference, d + "transformer.layers.")),
            transformer_mlp_dim=int(
                _need(reference, d + "transformer.layers.0.mlp.lin1.weight").shape[0]
            ),
            attention_downsample_rate=int(q.shape[1]) // int(q.shape[0]),
        )
    config = dataclasses.replace(base, **fields)
    if match_variant(config) is None:
        notes.append(
            f"custom architecture: {base.transformer_num_heads} decoder heads assumed "
            "(head counts are not in the tensor shapes)"
            if not encoder_only
            else "custom architecture"
        )
    return config, notes


#: simple feature pyramid stage index (log2 of the stride) -> scale factor
_SIMFP_SCALES = {2: 4.0, 3: 2.0, 4: 1.0, 5: 0.5}


def _infer_vitdet(reference: Mapping[str, np.ndarray]) -> tuple[ViTDetConfig, list[str]]:
    proj = _need(reference, "net.patch_embed.proj.weight")
    if proj.ndim != 4:
        raise LayoutError(f"patch embedding kernel {tuple(proj.shape)} is not 2D")
    e, patch = int(proj.shape[0]), int(proj.shape[2])
    base = ViTDetConfig()
    fields: dict[str, Any] = {}
    pos = reference.get("net.pos_embed")
    if pos is not None:
        tokens = int(pos.shape[1])
        side, cls = int(round(tokens**0.5)), False
        if side * side != tokens:
            side, cls = int(round((tokens - 1) ** 0.5)), True
            if side * side != tokens - 1:
                raise LayoutError(f"net.pos_embed has {tokens} tokens: not a square grid")
        fields.update(pretrain_img_size=side * patch, pretrain_use_cls_token=cls)
    depth, heads, window, global_blocks, notes = _vit_blocks(
        reference, "net.", e, None, base.window_size
    )
    grid = next(
        (
            (int(reference[f"net.blocks.{j}.attn.rel_pos_h"].shape[0]) + 1) // 2
            for j in global_blocks
        ),
        base.img_size // patch,
    )
    stages = _indices(
        {k[len("simfp_") :]: v for k, v in reference.items() if k.startswith("simfp_")}, ""
    )
    unknown = [i for i in stages if i not in _SIMFP_SCALES]
    if not stages or unknown:
        raise LayoutError(f"feature pyramid stages simfp_{stages} (expected a subset of 2..5)")
    norm = next(k for k in reference if k.startswith(f"simfp_{stages[0]}.") and ".norm." in k)
    lin1 = _need(reference, "net.blocks.0.mlp.fc1.weight")
    fields.update(
        img_size=grid * patch,
        patch_size=patch,
        in_chans=int(proj.shape[1]),
        embed_dim=e,
        depth=depth,
        num_heads=heads or base.num_heads,
        mlp_ratio=float(lin1.shape[0]) / e,
        qkv_bias="net.blocks.0.attn.qkv.bias" in reference,
        window_size=window,
        window_block_indexes=tuple(j for j in range(depth) if j not in global_blocks),
        use_abs_pos=pos is not None,
        use_rel_pos="net.blocks.0.attn.rel_pos_h" in reference,
        out_channels=int(reference[norm].shape[0]),
        scale_factors=tuple(_SIMFP_SCALES[i] for i in stages),
    )
    config = dataclasses.replace(base, **fields)
    variant = match_variant(config)
    if variant is not None:
        config = dataclasses.replace(config, drop_path_rate=VARIANTS[variant].config.drop_path_rate)
    return config, notes


def _infer_swin(reference: Mapping[str, np.ndarray], family: str) -> tuple[SwinConfig, list[str]]:
    p, notes = _prefix(family), []
    proj = reference.get(p + "patch_embed.proj.weight")
    rank = 3 if family == "video_swin" else 2
    if proj is None:
        raise LayoutError(f"no {p}patch_embed.proj.weight")
    if proj.ndim != rank + 2:
        raise LayoutError(
            f"patch embedding kernel {tuple(proj.shape)} is not {rank}D as {family} needs"
        )
    blocks: dict[int, set[int]] = {}
    pattern = re.compile(re.escape(p) + r"layers\.(\d+)\.blocks\.(\d+)\.")
    for key in reference:
        m = pattern.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks:
        raise LayoutError("no transformer blocks")
    stages = max(blocks) + 1
    depths = tuple(max(blocks.get(i, {-1})) + 1 for i in range(stages))
    if 0 in depths:
        raise LayoutError(f"stage {depths.index(0)} has no blocks")
    table_keys = [
        f"{p}layers.{i}.blocks.0.attn.relative_position_bias_table" for i in range(stages)
    ]
    if any(k not in reference for k in table_keys):
        raise LayoutError("a stage's first block has no attn.relative_position_bias_table")
    tables = [reference[k] for k in table_keys]
    index = next((v for k, v in reference.items() if k.endswith(".relative_position_index")), None)
    window, note = _infer_window(rank, int(tables[0].shape[0]), index, "bias table")
    if note:
        notes.append(note)
    fc1 = reference.get(f"{p}layers.0.blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise LayoutError("no mlp.fc1.weight in the first block")
    embed_dim = int(proj.shape[0])
    head = reference.get(_head(family) + "weight")
    fields: dict[str, Any] = dict(
        patch_size=tuple(int(s) for s in proj.shape[2:]),
        in_chans=int(proj.shape[1]),
        embed_dim=embed_dim,
        depths=depths,
        num_heads=tuple(int(t.shape[1]) for t in tables),
        window_size=window,
        mlp_ratio=float(fc1.shape[0]) / embed_dim,
        qkv_bias=f"{p}layers.0.blocks.0.attn.qkv.bias" in reference,
        patch_norm=f"{p}patch_embed.norm.weight" in reference,
        features_only=head is None,
    )
    if head is not None:
        fields["num_classes"] = int(head.shape[0])
    base = VideoSwinConfig() if family == "video_swin" else SwinConfig()
    variant = match_variant(dataclasses.replace(base, **fields))
    if variant is not None:
        base = VARIANTS[variant].config
    return dataclasses.replace(base, **fields), notes


# --------------------------------------------------------------------------- detection


@dataclass
class Detected:
    """What ``detect`` found: the layout, the family, the config (of the matching variant with the
    checkpoint's head when there is one) and the variant name (None for a custom architecture)."""

    layout: str
    family: str
    config: Config
    variant: str | None
    notes: list[str] = field(default_factory=list)
    #: reference keys the checkpoint lacks, allowed by ``allow``
    missing: list[str] = field(default_factory=list)
    allow: Allow = STRICT

    def overrides(self) -> dict[str, Any]:
        """Config fields that differ from the variant's: ``create_model(variant, **overrides())``
        builds the model this checkpoint loads into strictly."""
        if self.variant is None:
            return {}
        base = VARIANTS[self.variant].config
        return {
            f.name: getattr(self.config, f.name)
            for f in dataclasses.fields(self.config)
            if getattr(self.config, f.name) != getattr(base, f.name)
        }


def _check_derived(
    reference_keys: Mapping[str, str], state_dict: Mapping[str, np.ndarray], config: Config
) -> int:
    """Check the derived buffers (layout key -> reference key given); return how many there are.
    ``relative_position_index`` must equal the one the window defines."""
    count = 0
    for key, ref in reference_keys.items():
        leaf = _leaf(ref)
        if leaf == "relative_position_index":
            expected = relative_position_index(tuple(config.window_size))
            got = _index_matrix(state_dict[key])
            if got is None or got.shape != expected.shape or not np.array_equal(got, expected):
                shape = tuple(np.shape(state_dict[key]))
                raise LayoutError(
                    f"{key} (shape {shape}) differs from the relative position index of window "
                    f"{tuple(config.window_size)}: not a Swin checkpoint or a modified one"
                )
            count += 1
        elif leaf == "attn_mask":
            n = int(np.prod(config.window_size))
            if tuple(np.shape(state_dict[key])[-2:]) != (n, n):
                raise LayoutError(
                    f"{key} has shape {tuple(np.shape(state_dict[key]))}; window "
                    f"{tuple(config.window_size)} needs (..., {n}, {n})"
                )
            count += 1
    return count


def _resolve(
    state_dict: Mapping[str, Any], layout: str, family: str, allow: Allow = STRICT
) -> tuple[Config, dict[str, str], list[str], list[str]]:
    """Config, layout key -> reference key for the learned tensors, notes, and the reference keys
    missing by ``allow``. Raises ``UnexpectedKeysError`` / ``MissingKeysError`` /
    ``ShapeMismatchError`` (or ``LayoutError`` when the architecture cannot be solved) unless the
    tensors form this layout of this family exactly."""
    rules = RULES[(layout, family)]
    where = f"{layout}/{family}"
    mapping, unmatched, dropped = _map_keys(state_dict, layout, family)
    ignored = [k for k in unmatched if allow.allows_unused(k)]
    unmatched = [k for k in unmatched if k not in ignored]
    if not mapping:
        raise LayoutError("no tensor of the model")
    seen: dict[str, str] = {}
    for key, ref in mapping.items():
        if ref in seen:
            raise LayoutError(f"{seen[ref]} and {key} both map to {ref}")
        seen[ref] = key
    reference = {ref: state_dict[key] for key, ref in mapping.items()}
    try:
        config, notes = infer_config(reference, family)
    except LayoutError:
        if unmatched:  # the keys outside the layout say more than what could not be solved
            raise UnexpectedKeysError(unmatched, f"{where} checkpoint") from None
        raise
    if dropped:
        notes.append(_dropped_note(dropped))
    derived = {k: r for k, r in mapping.items() if _leaf(r) in DERIVED}
    count = _check_derived(derived, state_dict, config)
    if count:
        notes.append(f"{count} derived buffer(s) checked and dropped")
    learned = {k: r for k, r in mapping.items() if k not in derived}
    shapes = reference_shapes(config)
    extra = [k for k, r in learned.items() if r not in shapes]
    ignored += [k for k in extra if allow.allows_unused(k, learned[k])]
    unexpected = unmatched + [k for k in extra if k not in ignored]
    learned = {k: r for k, r in learned.items() if r in shapes}
    missing = [r for r in shapes if r not in seen]
    named = {r: _rename(r, rules, reverse=True) or r for r in missing}
    allowed = [r for r in missing if allow.allows_missing(r, named[r])]
    if len(allowed) < len(missing):
        absent = [named[r] for r in missing if r not in allowed]
        raise MissingKeysError(absent, f"{where} checkpoint", unexpected)
    if unexpected:
        raise UnexpectedKeysError(unexpected, f"{where} checkpoint")
    if ignored:
        notes.append(f"{len(ignored)} unexpected tensor(s) dropped by --allow-unused: {ignored}")
    if allowed:
        notes.append(
            f"{len(allowed)} missing tensor(s) allowed by --allow-missing: "
            f"{[named[r] for r in allowed]}"
        )
    for key, ref in learned.items():
        got = tuple(np.shape(state_dict[key]))
        if got != shapes[ref]:
            raise ShapeMismatchError(
                f"{where} checkpoint: {key} has shape {got}; the inferred architecture "
                f"needs {shapes[ref]}"
            )
    return config, learned, notes, allowed


def _summary(state_dict: Mapping[str, Any]) -> str:
    keys = list(state_dict)
    return f"{len(keys)} tensor(s), first keys {keys[:4]}"


def detect(state_dict: Mapping[str, Any], allow: Allow = STRICT) -> Detected:
    """Layout, family, config and variant of a flat state dict, from key names and shapes
    (values stay unread but for the small derived buffers).

    Raises ``LayoutError`` (one line: what was found and which layouts matched how far) when no
    layout, or more than one giving different results, fits every tensor. When the layout that
    covers most keys (at least half) fails only by missing or unexpected keys or a shape, that
    error is raised (``MissingKeysError``, ``UnexpectedKeysError``, ``ShapeMismatchError``) so
    the message names the tensors.
    """
    if not state_dict:
        raise LayoutError("empty state dict: no tensors")
    found, tried = [], []
    for layout, family in RULES:
        try:
            config, learned, notes, missing = _resolve(state_dict, layout, family, allow)
        except LayoutError as e:
            mapped, _, dropped = _map_keys(state_dict, layout, family)
            covered = len(mapped) + len(dropped)
            if covered:
                tried.append((covered, f"{layout}/{family}: {covered}/{len(state_dict)} keys", e))
            continue
        found.append((layout, family, config, learned, notes, missing))
    if not found:
        # The layout covering most keys (at least half) with the fewest problems names what is
        # wrong better than "unknown" when its problem is missing / unexpected tensors or a shape.
        specific = (MissingKeysError, UnexpectedKeysError, ShapeMismatchError)

        def problems(t) -> tuple[int, int]:
            e = t[2]
            count = len(getattr(e, "keys", ())) + len(getattr(e, "unexpected", ())) or 1
            return count, -t[0]

        close = [t for t in tried if 2 * t[0] >= len(state_dict)]
        best = min(close, key=problems)[2] if close else None
        if isinstance(best, specific):
            raise best
        partial = "; ".join(f"{t[1]} ({t[2]})" for t in tried) or "no layout matched any key"
        raise LayoutError(f"unknown checkpoint: {_summary(state_dict)}; {partial}")
    layout, family, config, learned, notes, missing = found[0]
    if len(found) > 1:
        if any(f[3] != learned for f in found[1:]):
            names = ", ".join(f"{f[0]}/{f[1]}" for f in found)
            raise LayoutError(f"ambiguous checkpoint ({_summary(state_dict)}): fits {names}")
        notes = [*notes, f"identical under {', '.join(f[0] for f in found[1:])} too"]
    if layout == "torchvision" and family == "swin":
        notes.append(
            "torchvision swin_t/s/b floors its patch conv where H or W is no multiple of the "
            "patch; the reference pads there, as the official code does"
        )
    if layout == "timm" and family == "swin":
        notes.append("timm shifts before padding on maps not a multiple of the window")
    variant = match_variant(config)
    if (
        variant is not None
        and isinstance(config, SwinConfig)
        and config.num_classes != VARIANTS[variant].config.num_classes
    ):
        notes.append(f"head has {config.num_classes} classes (variant default differs)")
    return Detected(layout, family, config, variant, notes, missing, allow)


# --------------------------------------------------------------------------- conversion


def to_reference(state_dict: Mapping[str, Any], detected: Detected) -> dict[str, Any]:
    """The reference model's state dict (its keys exactly, in its order, less the keys
    ``detected.missing`` names), values as they are (arrays or ``LazyTensor``s)."""
    config, learned, _, _ = _resolve(state_dict, detected.layout, detected.family, detected.allow)
    fields = arch_fields(config)
    if {f: getattr(config, f) for f in fields} != {f: getattr(detected.config, f) for f in fields}:
        raise LayoutError(f"state dict does not have the detected architecture {detected.variant}")
    by_ref = {ref: key for key, ref in learned.items()}
    return {ref: state_dict[by_ref[ref]] for ref in reference_shapes(config) if ref in by_ref}


def _official_attn_masks(config: SwinConfig) -> dict[str, np.ndarray]:
    """``attn_mask`` buffers of the official 2D model built at ``config.img_size``: shifted blocks
    of stages whose map is larger than the window."""
    out = {}
    size = config.img_size // config.patch_size[0]
    for i, depth in enumerate(config.depths):
        res = size // 2**i
        w = config.window_size[0]
        if res <= w or res % w:
            continue
        mask = shifted_window_mask((res, res), (w, w), (w // 2, w // 2))
        for j in range(1, depth, 2):
            out[f"layers.{i}.blocks.{j}.attn_mask"] = np.array(mask)
    return out


def from_reference(
    ref_state_dict: Mapping[str, Any],
    layout: str,
    family: str,
    config: Config | None = None,
    missing: Iterable[str] = (),
) -> dict[str, Any]:
    """The reference state dict in ``layout``'s keys, with the derived buffers that layout's
    checkpoints carry (``relative_position_index`` for official and torchvision; official 2D also
    ``attn_mask`` at ``config.img_size``). ``config`` defaults to the one the shapes imply;
    ``missing`` names reference keys deliberately absent (``--allow-missing``), left out."""
    if (layout, family) not in RULES:
        known = ", ".join(f"{a}/{b}" for a, b in RULES)
        raise LayoutError(f"no layout {layout}/{family}; known: {known}")
    if config is None:
        config, _ = infer_config(ref_state_dict, family)
    missing = set(missing)
    shapes = {k: v for k, v in reference_shapes(config).items() if k not in missing}
    if set(shapes) != set(ref_state_dict):
        missing = sorted(set(shapes) - set(ref_state_dict))[:3]
        extra = sorted(set(ref_state_dict) - set(shapes))[:3]
        raise LayoutError(f"not a reference state dict: missing {missing}, unexpected {extra}")
    rules, writes = RULES[(layout, family)], _WRITES[(layout, family)]
    index = None
    if "relative_position_index" in writes:
        index = relative_position_index(tuple(config.window_size))
        if layout == "torchvision" and family == "swin":
            index = index.reshape(-1)
    masks = _official_attn_masks(config) if "attn_mask" in writes else {}
    out: dict[str, np.ndarray] = {}
    for ref in shapes:
        value = ref_state_dict[ref]
        extras = []
        if (
            ref.endswith("attn.relative_position_bias_table")
            and "relative_position_index" in writes
        ):
            extras.append(
                (
                    ref[: -len("relative_position_bias_table")] + "relative_position_index",
                    np.array(index),
                )
            )
        if ref.endswith("attn.proj.bias"):
            mask_key = ref[: -len("attn.proj.bias")] + "attn_mask"
            if mask_key in masks:
                extras.append((mask_key, masks[mask_key]))
        out[_rename(ref, rules, reverse=True)] = value
        for key, extra in extras:
            out[_rename(key, rules, reverse=True)] = extra
    return out


def describe(detected: Detected, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Summary for ``inspect``: layout, family, variant, config, parameter count, dtypes."""
    reference = to_reference(state_dict, detected)
    return {
        "layout": detected.layout,
        "family": detected.family,
        "variant": detected.variant,
        "overrides": detected.overrides(),
        "config": config_to_dict(detected.config),
        "parameters": int(sum(int(np.prod(v.shape)) for v in reference.values())),
        "tensors": len(state_dict),
        "derived_buffers": len(state_dict) - len(reference),
        "dtypes": sorted({str(v.dtype) for v in state_dict.values()}),
        "notes": list(detected.notes),
    }
