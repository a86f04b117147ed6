"""The tensor back-end: decoding, ram_image_folder holding encoded files, uint8 batches, and the
normalisation the methods apply on the device."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as F

from solo_ext.data import (
    dataset_mean_std,
    fill_augmentation_defaults,
    prepare_dataloader,
    prepare_pretrain_dataset,
)
from solo_ext.data.augmentations import FullTransformPipeline, NCropAugmentation, prepare_transforms
from solo_ext.data.decode import decode_rgb_tensor
from solo_ext.data.loaders import image_backend
from solo_ext.data.tensor_pipeline import (
    build_tensor_pipeline,
    normalize_images,
    tensor_classification_transforms,
)
from solo_ext.utils.errors import DataError


def test_jpeg_and_png_decode_like_pil(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    for suffix in ("jpg", "png"):
        path = tmp_path / f"x.{suffix}"
        Image.fromarray(pixels).save(path)
        ours = decode_rgb_tensor(path)
        reference = F.pil_to_tensor(Image.open(path).convert("RGB"))
        assert ours.dtype == torch.uint8 and ours.shape == (3, 30, 50)
        # both use libjpeg-turbo; its IDCT/upsampling settings may differ by a grey level
        assert (ours.int() - reference.int()).abs().max() <= 2, suffix
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)
    with pytest.raises(DataError, match=r"^cannot decode image '.*bad\.jpg'"):
        decode_rgb_tensor(tmp_path / "bad.jpg")


def test_backend_choice():
    assert image_backend("imagenet100", "image_folder") == "tensor"
    assert image_backend("custom", "ram_image_folder") == "tensor"
    assert image_backend("cifar10", "image_folder") == "pil"
    assert image_backend("digits", "image_folder") == "pil"


@pytest.mark.parametrize("data_format", ["image_folder", "ram_image_folder"])
def test_uint8_pretraining_batches(noise_folder, data_format):
    aug = fill_augmentation_defaults({"crop_size": 16, "num_crops": 2}, "custom")
    transform = FullTransformPipeline([NCropAugmentation(build_tensor_pipeline(aug), 2)])
    ds = prepare_pretrain_dataset("custom", transform, str(noise_folder), data_format, decode="tensor")
    if data_format == "ram_image_folder":
        assert all(isinstance(b, bytes) for b in ds.base.encoded)  # encoded files, decoded per access
    indexes, crops, targets = next(iter(prepare_dataloader(ds, batch_size=5, num_workers=0)))
    assert indexes.shape == targets.shape == (5,)
    assert [c.shape for c in crops] == [(5, 3, 16, 16)] * 2 and crops[0].dtype == torch.uint8


def test_val_transform_matches_pil_after_normalisation(noise_folder):
    image = Image.open(next(noise_folder.rglob("*.png"))).convert("RGB").resize((50, 40))
    _, pil_val = prepare_transforms("imagenet100", 24)
    _, tensor_val = tensor_classification_transforms("imagenet100", 24)
    mean, std = (torch.tensor(v) for v in dataset_mean_std("imagenet100"))
    ours = normalize_images(tensor_val(F.pil_to_tensor(image))[None], mean, std)[0]
    reference = pil_val(image)
    assert ours.shape == reference.shape == (3, 24, 24)
    # same geometry; the bicubic kernels differ (PIL a=-0.5, torchvision a=-0.75) on noise pixels
    assert (ours - reference).abs().mean() < 0.15


def test_normalize_images_only_touches_uint8():
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.5])
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize_images(x, mean, std)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0, :, 0, 0], (1 - mean) / std)
    floats = torch.randn(2, 3, 4, 4)
    assert normalize_images(floats, mean, std) is floats


def test_the_config_fills_every_crop_size(tmp_path):
    """build_tensor_pipeline reads crop_size as given: the config layer fills the dataset's."""
    from omegaconf import OmegaConf

    from solo_ext.config.pretrain import parse_cfg
    from tests.methods.tiny import tiny_cfg

    cfg = parse_cfg(tiny_cfg(tmp_path, augmentations=[{"num_crops": 1}, {"num_crops": 1, "crop_size": 16}]))
    assert [aug.crop_size for aug in cfg.augmentations] == [32, 16]
    pipeline = build_tensor_pipeline(OmegaConf.to_container(cfg.augmentations[0], resolve=True))
    assert pipeline(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape == (3, 32, 32)


def test_a_jpeg_decompression_bomb_is_refused_before_decoding(tmp_path):
    """A JPEG whose frame header says 20000 x 20000 (4e8 pixels, more than twice PIL's
    MAX_IMAGE_PIXELS) is refused from its header, before decode_jpeg allocates 1.2 GB."""
    path = tmp_path / "huge.jpg"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    frame = data.index(b"\xff\xc0")  # SOF0: length (2), precision (1), height (2), width (2)
    data[frame + 5 : frame + 9] = (20_000).to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"^cannot decode image '{path}': .*decompression bomb"):
        decode_rgb_tensor(path)
