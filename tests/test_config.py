"""MethodConfig: every setting is type- and range-checked, and the error names it as its user typed it."""

from __future__ import annotations

import dataclasses

import pytest

from no_time_to_train import InputError, MethodConfig
from no_time_to_train.config import SettingError

# One wrong value per setting (wrong type or out of range); each must be refused, naming the setting.
BAD = {
    "context_ratio": [-0.1, "wide", float("inf")],
    "encoder_size": [0, -14, 518.0, "518", "big"],
    "ref_mask_sampling": ["nearest"],
    "prototype": ["median"],
    "sam_image_size": [0, -1024, 1024.5],
    "points_per_side": ["abc", 0, -1, True, 16.0],
    "point_grid": ["random"],
    "point_batch_size": [0, "big", 1.5, False],
    "prompt_mode": ["smart"],
    "guided_points": [0, "many"],
    "multimask_tokens": [[], [0], [1, 4], [1, 1], "a", 2.5, [True]],
    "iou_threshold": [5, -0.1, "high", float("nan"), True],
    "mask_threshold": [float("nan"), float("-inf"), "zero", None],
    "add_no_memory_embedding": ["maybe", 1, None],
    "nms_threshold": [1.5, -1, "half"],
    "nms_rank_by": ["area"],
    "max_detections": [0, -1, 10.5],
    "pre_merge_factor": [0, "eight"],
    "merge_exponent": [-0.5, float("nan"), "half"],
    "soft_merge": ["maybe", "yes", 0],
    "mask_upsampling": ["nearest"],
    "box_convention": ["half-open"],
    "score_threshold": ["high", 1.5, -0.2, float("nan")],
    "negative_temperature": [0, -1, "hot"],
}


def test_every_setting_has_bad_values_listed():
    assert set(BAD) == {f.name for f in dataclasses.fields(MethodConfig)}


@pytest.mark.parametrize("name,value", [(n, v) for n, vs in BAD.items() for v in vs])
def test_bad_value_is_refused_naming_the_setting(name, value):
    with pytest.raises(SettingError, match=rf"^config: {name} must be ") as info:
        MethodConfig(**{name: value})
    assert info.value.setting == name and isinstance(info.value, InputError)


def test_good_values_are_kept_and_normalised():
    cfg = MethodConfig(iou_threshold=1, score_threshold=0, soft_merge=False, multimask_tokens=[3, 1],
                       point_batch_size=64, mask_threshold=-2, encoder_size=224, merge_exponent=0)
    assert cfg.iou_threshold == 1.0 and isinstance(cfg.iou_threshold, float)
    assert cfg.score_threshold == 0.0 and cfg.multimask_tokens == (3, 1) and cfg.point_batch_size == 64
    assert MethodConfig(score_threshold=None).score_threshold is None
    assert MethodConfig(score_threshold="none").score_threshold is None
    assert MethodConfig.from_dict(cfg.to_dict()) == cfg


def test_cli_style_overrides_parse_yaml_scalars():
    cfg = MethodConfig().with_overrides(["score_threshold=1e-3", "multimask_tokens=1,2", "soft-merge=no",
                                         "point_batch_size=auto", "score_threshold=none"])
    assert cfg.score_threshold is None and cfg.multimask_tokens == (1, 2) and cfg.soft_merge is False
    assert MethodConfig().with_overrides(["score_threshold=1e-3"]).score_threshold == 0.001
    assert MethodConfig().with_overrides(["multimask_tokens=[2, 3]"]).multimask_tokens == (2, 3)


def test_override_errors_name_the_flag_the_user_typed():
    labels = {"iou_threshold": "--iou-threshold", "soft_merge": "--soft-merge"}
    with pytest.raises(SettingError, match=r"^--iou-threshold must be a number in \[0, 1\], got 5$"):
        MethodConfig().with_overrides(["iou_threshold=5"], labels)
    with pytest.raises(SettingError, match=r"^--soft-merge must be true or false, got 'maybe'$"):
        MethodConfig().with_overrides(["soft_merge=maybe"], labels)
    with pytest.raises(SettingError, match=r"^config: points_per_side must be an integer >= 1, got 'abc'$"):
        MethodConfig().with_overrides(["points_per_side=abc"], labels)
    with pytest.raises(InputError, match="--iou-threshold: cannot parse"):
        MethodConfig().with_overrides(["iou_threshold=[1,"], labels)


def test_config_file_errors_name_the_file_and_key(tmp_path):
    (tmp_path / "c.yaml").write_text("method:\n  soft_merge: maybe\n")
    with pytest.raises(SettingError, match=r"^config file .*c\.yaml: soft_merge must be true or false"):
        MethodConfig.from_file(tmp_path / "c.yaml")
    (tmp_path / "c.json").write_text('{"points_per_side": "32"}')
    with pytest.raises(SettingError, match=r"c\.json: points_per_side must be an integer >= 1, got '32'"):
        MethodConfig.from_file(tmp_path / "c.json")
