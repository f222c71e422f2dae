"""``--preset``: named models and the settings they need; explicit models and settings override them."""

from __future__ import annotations

import pytest

from no_time_to_train import MethodConfig, ReferenceSegmenter, cli
from no_time_to_train.errors import InputError
from no_time_to_train.models import checkpoints
from no_time_to_train.presets import PRESETS, get_preset


def test_paper_preset_is_the_default():
    paper = get_preset("paper")
    assert (paper.proposer, paper.encoder) == (checkpoints.DEFAULT_SAM2, checkpoints.DEFAULT_ENCODER)
    assert MethodConfig().replace(**paper.settings) == MethodConfig()


def test_every_presets_settings_are_valid_and_unknown_names_are_listed():
    for name, preset in PRESETS.items():
        MethodConfig().replace(**preset.settings)
        assert preset.proposer and preset.encoder and preset.about, name
    with pytest.raises(InputError, match=r"--preset 'turbo' is not a preset; the presets are: paper \(the paper"):
        get_preset("turbo")


def _run_predict(monkeypatch, argv):
    """Parse ``nttt predict ARGV`` as main() does and return (args, method config) instead of predicting."""
    seen = {}

    def fake_predict(args):
        seen["args"], seen["config"] = args, cli._method_config(args)
        return 0

    monkeypatch.setattr(cli, "cmd_predict", fake_predict)
    monkeypatch.setattr(cli, "_check_up_front", lambda args: None)
    assert cli.main(["predict", "img.jpg", "--memory", "m.safetensors", "-o", "out", *argv]) == 0
    return seen["args"], seen["config"]


def test_cli_preset_gives_models_and_settings(monkeypatch):
    args, cfg = _run_predict(monkeypatch, ["--preset", "dinov3"])
    assert args.sam2 == "facebook/sam2-hiera-large" and args.encoder == "facebook/dinov3-vitl16-pretrain-lvd1689m"
    assert cfg.encoder_size == "auto" and cfg.replace(encoder_size=518) == MethodConfig()
    args, cfg = _run_predict(monkeypatch, [])
    assert args.sam2 is None and args.encoder is None and cfg == MethodConfig()  # no preset: the paper's


def test_explicit_models_and_settings_override_the_preset(monkeypatch, tmp_path):
    args, cfg = _run_predict(monkeypatch, ["--preset", "dinov3", "--encoder", "my_dinov3.pth", "--encoder-size", "640"])
    assert args.encoder == "my_dinov3.pth" and args.sam2 == "facebook/sam2-hiera-large" and cfg.encoder_size == 640
    (tmp_path / "c.yaml").write_text("encoder_size: 512\nnms_threshold: 0.6\n")
    _, cfg = _run_predict(monkeypatch, ["--preset", "dinov3", "--config", str(tmp_path / "c.yaml")])
    assert cfg.encoder_size == 512 and cfg.nms_threshold == 0.6
    _, cfg = _run_predict(monkeypatch, ["--preset", "dinov3", "--config", str(tmp_path / "c.yaml"),
                                        "--set", "encoder_size=768"])
    assert cfg.encoder_size == 768


def test_unknown_preset_on_the_cli_lists_the_presets(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["predict", "img.jpg", "--memory", "m", "-o", "o", "--preset", "turbo"])
    assert exit_.value.code == 2
    assert "argument --preset: invalid choice: 'turbo'" in capsys.readouterr().err


def test_from_preset_in_python(tiny_sam2, tiny_encoder):
    seg = ReferenceSegmenter.from_preset("dinov3")
    assert seg._sam2_source == "facebook/sam2-hiera-large" and seg._encoder_source.startswith("facebook/dinov3")
    assert seg.config.encoder_size == "auto"
    seg = ReferenceSegmenter.from_preset("fast", sam2=tiny_sam2, encoder=tiny_encoder,
                                         config=MethodConfig(points_per_side=2))
    assert seg.sam2.model is tiny_sam2 and seg.config.points_per_side == 2
