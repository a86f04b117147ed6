"""Checkpoints in and out, against the real libraries: ours -> timm, ours -> Hugging Face -> ours,
Hugging Face -> ours -> Hugging Face, and facebookresearch/mae's layout; outputs compared in
float64, not only key names."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModel,
    ViTMAEConfig,
    ViTMAEForPreTraining,
    pipeline,
)

from solo_ext.backbones.interop import from_hf, to_hf
from solo_ext.backbones.loading import read_checkpoint
from solo_ext.config.pretrain import parse_cfg
from solo_ext.data.info import dataset_mean_std
from solo_ext.export import ExportError, export
from solo_ext.losses.mae import mae_loss_func
from solo_ext.methods import METHODS
from solo_ext.run.pretrain import run_pretrain
from solo_ext.utils.runfolder import epoch_checkpoints as checkpoints_in
from tests.methods.test_linear_model import save_tiny_pretrained
from tests.methods.tiny import tiny_cfg

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def ours(run_dir: Path, init_from=None):
    """Our MAE as the run's args.json describes it, with the run's (or init_from's) weights."""
    args = json.loads((run_dir / "args.json").read_text())
    if init_from is not None:
        args["method_kwargs"]["init_from"] = str(init_from)
    cfg = parse_cfg({k: v for k, v in args.items() if k not in ("derived", "run_id", "wandb_run_id")})
    model = METHODS["mae"](cfg)
    if init_from is None:
        state = torch.load(checkpoints_in(run_dir)[-1], weights_only=True)["state_dict"]
        model.load_state_dict(state)
    return model.double().eval()


def our_loss_and_pred(model, x, noise):
    out = model.backbone.forward_features(x, mask_ratio=model.mask_ratio, noise=noise)
    pred = model.decoder(out.tokens, out.ids_restore)
    return mae_loss_func(x, pred, out.mask, model.patch_size, model.norm_pix_loss), pred


@pytest.fixture
def run_dir(tmp_path):
    return save_tiny_pretrained(tmp_path / "run").parent


def inputs(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 3, model.backbone.img_size, model.backbone.img_size, generator=generator).double()
    noise = torch.rand(3, model.backbone.num_patches, generator=generator).double()
    return x, noise


def test_ours_to_timm_gives_the_same_features(run_dir, tmp_path):
    out = export(run_dir, "timm", tmp_path / "timm")
    # timm's own layout, read by timm alone: no argument of ours
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    mine = ours(run_dir)
    x, _ = inputs(mine)
    theirs = model.double().eval().forward_features(x)
    torch.testing.assert_close(theirs, mine.backbone.forward_features(x).tokens, rtol=1e-12, atol=1e-12)
    config = json.loads((out / "config.json").read_text())
    mean, std = dataset_mean_std("digits")
    data = timm.data.resolve_data_config({}, model=model)
    assert data["input_size"] == (3, 32, 32) and data["mean"] == list(mean) and data["std"] == list(std)
    assert config["architecture"] == "vit_tiny_patch16_224" and config["pretrained_cfg"]["tag"] == "solo_ext"
    meta = json.loads((out / "export.json").read_text())
    assert meta["epoch"] == 0 and len(meta["args_sha256"]) == 64


def test_ours_to_hf_and_back(run_dir, tmp_path):
    out = export(run_dir, "hf", tmp_path / "hf")
    mine = ours(run_dir)
    # the exported config keeps every patch (feature extraction); pretraining asks for the run's ratio
    hf, info = ViTMAEForPreTraining.from_pretrained(
        str(out), mask_ratio=mine.mask_ratio, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    x, noise = inputs(mine)
    result = hf.double().eval()(pixel_values=x, noise=noise)
    loss, pred = our_loss_and_pred(mine, x, noise)
    torch.testing.assert_close(result.logits, pred, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.loss, loss, rtol=1e-10, atol=1e-12)
    # back: init_from the Hugging Face folder gives our weights again
    back = ours(run_dir, init_from=out)
    for (name, a), b in zip(mine.backbone.state_dict().items(), back.backbone.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for (name, a), b in zip(mine.decoder.state_dict().items(), back.decoder.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_hf_folder_is_whole_for_transformers(run_dir, tmp_path):
    """AutoModel, AutoImageProcessor and the feature-extraction pipeline take the folder alone
    (offline), and the pipeline's tokens give our cls and mean features of the same pixels."""
    out = export(run_dir, "hf", tmp_path / "hf")
    processor = AutoImageProcessor.from_pretrained(str(out))
    mean, std = dataset_mean_std("digits")
    assert type(processor).__name__.startswith("ViTImageProcessor")
    assert processor.size == {"height": 32, "width": 32}
    assert list(processor.image_mean) == list(mean) and list(processor.image_std) == list(std)
    assert type(AutoModel.from_pretrained(str(out))).__name__ == "ViTMAEModel"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ViTMAEForPreTraining"]
    extract = pipeline("image-feature-extraction", model=str(out), dtype=torch.float64)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    images = [Image.fromarray(p) for p in pixels]
    tokens = torch.cat([extract(image, return_tensors=True) for image in images])
    x = processor(images, return_tensors="pt")["pixel_values"].double()
    mine = ours(run_dir).backbone
    assert tokens.shape == (3, 1 + mine.num_patches, mine.embed_dim)  # every patch, none masked
    full = mine.forward_features(x).tokens
    for mode in ("cls", "mean"):
        torch.testing.assert_close(mine.pool(tokens, mode), mine.pool(full, mode), rtol=1e-10, atol=1e-12)
    again = torch.cat([extract(image, return_tensors=True) for image in images])
    torch.testing.assert_close(mine.pool(again, "mean"), mine.pool(tokens, "mean"), rtol=1e-12, atol=1e-12)


def random_hf(tmp_path: Path) -> Path:
    """A transformers-made random ViTMAE of the tiny test size (LayerNorm eps 1e-6, as MAE's)."""
    torch.manual_seed(1)
    config = ViTMAEConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        layer_norm_eps=1e-6,
        mask_ratio=0.75,
    )
    model = ViTMAEForPreTraining(config)
    folder = tmp_path / "random-hf"
    model.save_pretrained(str(folder))
    return folder


def test_hf_to_ours_to_hf(tmp_path, monkeypatch):
    folder = random_hf(tmp_path)
    hf = ViTMAEForPreTraining.from_pretrained(str(folder)).double().eval()
    encoder, decoder = from_hf(read_checkpoint(folder))
    again = to_hf(
        encoder, decoder, "v5" if any(k.startswith("vit.layers.") for k in hf.state_dict()) else "v4"
    )
    assert set(again) == set(hf.state_dict())
    for key, value in hf.state_dict().items():
        torch.testing.assert_close(again[key].double(), value, rtol=0, atol=0, msg=key)

    # a transformers-made ViTMAE imported with init_from, trained two steps, exported again
    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg(
        tmp_path,
        method="mae",
        method_kwargs={"init_from": str(folder)},
        limit_train_batches=2,
        limit_val_batches=1,
    )
    model = METHODS["mae"](parse_cfg(cfg)).double().eval()
    x, noise = inputs(model)
    loss, pred = our_loss_and_pred(model, x, noise)
    result = hf(pixel_values=x, noise=noise)
    torch.testing.assert_close(result.logits, pred, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.loss, loss, rtol=1e-10, atol=1e-12)
    run_pretrain(OmegaConf.create(cfg))
    (run,) = (tmp_path / "trained_models" / "mae").iterdir()
    out = export(run, "hf", tmp_path / "after")
    trained, info = ViTMAEForPreTraining.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    moved = [k for k, v in trained.state_dict().items() if not torch.equal(v.double(), hf.state_dict()[k])]
    assert moved  # it trained


def test_mae_layout_is_facebookresearch_maes(run_dir, tmp_path):
    out = export(run_dir, "mae", tmp_path / "mae")
    model = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "mask_token"} <= set(model)
    assert any(k.startswith("decoder_blocks.0.attn.qkv") for k in model)
    # and it comes back through init_from, encoder and decoder alike
    back = ours(run_dir, init_from=out / "checkpoint.pth")
    mine = ours(run_dir)
    x, noise = inputs(mine)
    torch.testing.assert_close(our_loss_and_pred(back, x, noise)[0], our_loss_and_pred(mine, x, noise)[0])


def test_linear_evaluation_reads_an_hf_folder(tmp_path):
    from solo_ext.config.linear import parse_cfg as parse_linear
    from tests.methods.test_linear_model import tiny_linear_cfg

    folder = random_hf(tmp_path)
    cfg = parse_linear(tiny_linear_cfg(str(folder), tmp_path))
    assert cfg.pretrained_feature_extractor == str(folder / "model.safetensors")
    assert cfg.backbone.kwargs.embed_dim == 32 and cfg.backbone.kwargs.depth == 2


def test_export_errors_are_one_line(run_dir, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("")
    for argv, message in (
        ([str(run_dir), "--to", "hf", "--out", str(taken)], "exists and is not empty"),
        ([str(tmp_path / "nothing"), "--to", "timm", "--out", str(tmp_path / "o")], "no such checkpoint"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "solo_ext.export", *argv], capture_output=True, text=True, cwd=ROOT
        )
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "taken"]  # no folder, no temporary one


def test_from_hf_names_what_it_cannot_convert():
    t = torch.zeros(2)
    hf = {"vit.embeddings.cls_token": t, "vit.layers.0.attention.q_proj.weight": t}
    for state, message in (
        ({"cls_token": t}, "not a Hugging Face ViTMAE state dict"),
        ({**hf, "vit.layers.0.extra.weight": t}, "vit.layers.0.extra.weight: no counterpart"),
        (hf, "blocks.0: query, key and value weight are not all present"),
    ):
        with pytest.raises(KeyError, match=message):
            from_hf(state)


def test_export_refuses_before_writing(run_dir, tmp_path):
    ckpt = checkpoints_in(run_dir)[-1]
    with pytest.raises(ExportError, match=r"^--to='onnx': must be one of timm, hf, mae$"):
        export(run_dir, "onnx", tmp_path / "o")
    lone = tmp_path / "lone" / "x.ckpt"
    lone.parent.mkdir()
    lone.write_bytes(ckpt.read_bytes())
    with pytest.raises(ExportError, match="x.ckpt: no args.json beside it"):
        export(lone, "timm", tmp_path / "o")
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if not k.startswith("decoder.")}
    torch.save(state, ckpt)
    with pytest.raises(
        ExportError, match=r"\.ckpt: no decoder weights \(decoder\.\*\) to export for --to hf"
    ):
        export(run_dir, "hf", tmp_path / "o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lone", "run"]  # no folder, no temporary one
