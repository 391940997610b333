"""A config read from a file, checked alone (``zoo.config_checks`` and each family's
``Family.validate``): nothing this zoo registers is refused, and each family's rules name the
field they refuse. The files carrying such configs are test_bad_port_files.py's rows."""

from __future__ import annotations

import pytest

from zoo.registry import FAMILIES


def test_every_registered_config_passes():
    """The checks refuse nothing this zoo makes: every variant and every family's tiny config
    goes through config_from_json unchanged."""
    import json

    from zoo.configs import VARIANTS, config_from_json, config_to_dict

    configs = [v.config for v in VARIANTS.values()] + [f.tiny for f in FAMILIES.values()]
    for config in configs:
        assert config_from_json(json.dumps(config_to_dict(config))) == config


@pytest.mark.parametrize(
    "family,overrides,message",
    [
        ("video_swin", {"patch_size": [4, 4]}, r"patch_size: expected 3 items"),
        ("video_swin", {"head_dropout": 1.0}, r"head_dropout: 1.0 is outside \[0, 1\)"),
        ("swin", {"num_heads": [1]}, "num_heads: 1 entries for 2 stages"),
        ("swin", {"depths": [1] * 9, "num_heads": [1] * 9}, "depths: 9 stages"),
        ("swin", {"qkv_bias": 1}, "qkv_bias: expected true or false"),
        ("sam", {"encoder_num_heads": 5}, "encoder_num_heads: 5 does not divide the width 48"),
        ("sam", {"encoder_global_attn_indexes": [2]}, r"encoder_global_attn_indexes: \(2,\)"),
        ("sam", {"out_chans": 36}, "out_chans: 8 does not divide the width 36"),
        ("sam", {"pixel_std": [0.2, 0.0, 0.2]}, "pixel_std: .* must be positive"),
        ("sam_image_encoder", {"img_size": 8}, "img_size: 8 is smaller than one patch"),
        ("vitdet", {"scale_factors": [3.0]}, "scale_factors: .* are not distinct ones of"),
        ("vitdet", {"patch_size": 2, "img_size": 64, "pretrain_img_size": 32}, "stride 0.5"),
        ("vitdet", {"depth": 2000}, "depth: 2000 blocks"),
        ("vitdet", {"mlp_ratio": 0.001}, "mlp_ratio: 0.001 gives an MLP 0 wide"),
    ],
)
def test_family_ranges(family, overrides, message):
    """Each family's own rules (Family.validate) name the field, before its shape table."""
    from zoo.config_checks import ConfigError
    from zoo.configs import config_from_dict, config_to_dict

    data = {**config_to_dict(FAMILIES[family].tiny), **overrides}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)
