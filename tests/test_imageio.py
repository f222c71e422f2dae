"""Images and masks from files, PIL images and arrays; every bad input gives one clear error."""

import numpy as np
import pytest
from PIL import Image

from no_time_to_train import InputError
from no_time_to_train.imageio import load_image, load_mask


def test_rgb_grayscale_rgba_and_16bit_files(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert np.array_equal(load_image(tmp_path / "rgb.png"), rgb)

    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    gray = load_image(tmp_path / "gray.png")
    assert gray.shape == (5, 7, 3) and np.array_equal(gray[..., 2], rgb[..., 0])

    rgba = np.dstack([rgb, np.full((5, 7), 17, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(load_image(tmp_path / "rgba.png"), rgb)

    deep = (np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out[4, 6, 0] == round(34000 / 65535 * 255)


def test_arrays_and_pil_images():
    assert load_image(np.zeros((4, 4), np.uint8)).shape == (4, 4, 3)
    assert load_image(np.ones((4, 4, 3), np.float32))[0, 0, 0] == 255
    assert load_image(np.full((2, 2, 3), 65535, np.uint16))[0, 0, 0] == 255
    assert load_image(Image.new("L", (3, 2), 9)).shape == (2, 3, 3)


def test_bad_images(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(InputError, match="broken.jpg could not be decoded"):
        load_image(tmp_path / "broken.jpg")
    with pytest.raises(InputError, match="expected"):
        load_image(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(InputError, match="unsupported type"):
        load_image(42)


def test_masks(tmp_path):
    m = np.zeros((4, 6), bool)
    m[1, 2] = True
    assert np.array_equal(load_mask(m, (4, 6)), m)
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m.png")
    assert np.array_equal(load_mask(tmp_path / "m.png", (4, 6)), m)
    with pytest.raises(InputError, match="does not match"):
        load_mask(m, (5, 6))
    with pytest.raises(InputError, match="empty"):
        load_mask(np.zeros((4, 6), bool))
    with pytest.raises(InputError, match="not found"):
        load_mask(tmp_path / "nomask.png")


def test_images_above_pils_limit_load_up_to_ours(tmp_path, monkeypatch):
    import no_time_to_train.imageio as imageio

    rgb = np.random.default_rng(1).integers(0, 255, (10, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # PIL alone: DecompressionBombError above 100 px
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "big.png")
    assert np.array_equal(load_image(tmp_path / "big.png"), rgb)  # 200 px: within our limit
    assert Image.MAX_IMAGE_PIXELS == 50  # PIL's own setting is left as it was
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 199)
    with pytest.raises(InputError, match=r"big\.png is 20x10 = 200 pixels, above the limit of 199 .*MAX_IMAGE_PIXELS"):
        load_image(tmp_path / "big.png")
    with pytest.raises(InputError, match="above the limit"):
        load_mask(tmp_path / "big.png")


def test_dataset_images_obey_the_same_limit(tmp_path, monkeypatch):
    import no_time_to_train.imageio as imageio
    from no_time_to_train.data.coco import CocoDataset

    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    ds = CocoDataset({"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 10}], "annotations": [],
                      "categories": [{"id": 1, "name": "a"}]}, tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    assert ds.load_image(1).size == (20, 10)
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InputError, match=r"a\.png is 20x10"):
        ds.load_image(1)
