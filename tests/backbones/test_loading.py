import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from solo_ext.backbones.loading import (
    CheckpointError,
    extract_backbone_state_dict,
    load_backbone_weights,
    read_checkpoint,
)
from solo_ext.backbones.pos_embed import interpolate_pos_embed
from solo_ext.backbones.vit import MaskedViT, build_backbone


class NotATensor:
    """A custom class: weights_only unpickling must refuse it."""


def tiny_vit(seed: int, img_size: int = 32, depth: int = 2, embed_dim: int = 32) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(
        img_size=img_size,
        patch_size=8,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=2,
        num_classes=0,
        global_pool="token",
    ).eval()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def mae_pretrain_state_dict(src: torch.nn.Module) -> dict:
    """src's encoder weights plus what facebookresearch/mae's MaskedAutoencoderViT adds."""
    sd = dict(src.state_dict())
    sd["mask_token"] = torch.zeros(1, 1, 16)
    sd["decoder_embed.weight"] = torch.randn(16, 32)
    sd["decoder_embed.bias"] = torch.randn(16)
    sd["decoder_pos_embed"] = torch.randn(1, 17, 16)
    sd["decoder_blocks.0.norm1.weight"] = torch.randn(16)
    sd["decoder_blocks.0.attn.qkv.weight"] = torch.randn(48, 16)
    sd["decoder_norm.weight"] = torch.randn(16)
    sd["decoder_pred.weight"] = torch.randn(8 * 8 * 3, 16)
    return sd


def saved_mae_pretrain(tmp_path, src, dst):
    """``src`` saved as facebookresearch/mae's pretraining checkpoint, and a batch on which
    ``dst`` (not yet loaded) computes other features; (path, batch)."""
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": mae_pretrain_state_dict(src)}, path)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(src(x), dst(x))
    return path, x


def test_mae_format_loads_with_identical_features(tmp_path):
    src, dst = tiny_vit(0), tiny_vit(1)
    path, x = saved_mae_pretrain(tmp_path, src, dst)

    report = load_backbone_weights(dst, path)

    assert report == {"format": "mae", "num_tensors": len(src.state_dict()), "pos_embed_interpolated": False}
    assert_same_weights(src, dst)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_mae_finetuned_with_cls_token_drops_head():
    src, dst = tiny_vit(0), tiny_vit(1)
    sd = dict(src.state_dict(), **{"head.weight": torch.randn(10, 32), "head.bias": torch.randn(10)})
    assert load_backbone_weights(dst, {"model": sd})["format"] == "mae"
    assert_same_weights(src, dst)


def test_mae_finetuned_with_global_pool_is_refused():
    sd = {k: v for k, v in tiny_vit(0).state_dict().items() if not k.startswith("norm.")}
    sd["fc_norm.weight"], sd["fc_norm.bias"] = torch.ones(32), torch.zeros(32)
    with pytest.raises(CheckpointError, match="fine-tuned with global_pool"):
        extract_backbone_state_dict({"model": sd})


def test_pos_embed_interpolated_to_larger_image(tmp_path):
    src, dst = tiny_vit(0, img_size=32), tiny_vit(1, img_size=64)
    path = tmp_path / "mae_32px.pth"
    torch.save({"model": mae_pretrain_state_dict(src)}, path)

    report = load_backbone_weights(dst, path)

    assert report["pos_embed_interpolated"] is True
    assert dst.pos_embed.shape == (1, 1 + 8 * 8, 32)
    torch.testing.assert_close(dst.pos_embed, interpolate_pos_embed(src.pos_embed.detach(), 8))
    torch.testing.assert_close(dst.pos_embed[:, 0], src.pos_embed[:, 0])
    for k, v in src.state_dict().items():
        if k != "pos_embed":
            assert torch.equal(dst.state_dict()[k], v), k
    assert dst(torch.randn(2, 3, 64, 64)).shape == (2, 32)


def test_solo_learn_format_loads(tmp_path):
    src, dst = tiny_vit(0), tiny_vit(1)
    state_dict = {f"backbone.{k}": v for k, v in src.state_dict().items()}
    state_dict["classifier.weight"], state_dict["classifier.bias"] = torch.randn(10, 32), torch.randn(10)
    # momentum methods keep a second copy whose prefix also ends in "backbone."
    state_dict.update({f"momentum_backbone.{k}": torch.zeros_like(v) for k, v in src.state_dict().items()})
    path = tmp_path / "solo.ckpt"
    torch.save({"state_dict": state_dict, "epoch": 99}, path)

    report = load_backbone_weights(dst, path)

    assert report["format"] == "solo-learn"
    assert report["num_tensors"] == len(src.state_dict())
    assert_same_weights(src, dst)


def test_solo_learn_legacy_encoder_prefix_loads():
    src, dst = tiny_vit(0), tiny_vit(1)
    state_dict = {f"encoder.{k}": v for k, v in src.state_dict().items()}
    state_dict["classifier.weight"] = torch.randn(10, 32)
    assert load_backbone_weights(dst, {"state_dict": state_dict})["format"] == "solo-learn-legacy"
    assert_same_weights(src, dst)


def test_lightning_checkpoint_of_ours_loads(tmp_path):
    src, dst = tiny_vit(0), tiny_vit(1)
    state_dict = {f"backbone.{k}": v for k, v in src.state_dict().items()}
    state_dict["decoder.decoder_embed.weight"] = torch.randn(16, 32)
    state_dict["decoder.decoder_pos_embed"] = torch.randn(1, 17, 16)
    state_dict["decoder.decoder_pred.weight"] = torch.randn(192, 16)
    state_dict["classifier.weight"] = torch.randn(10, 32)
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": state_dict,
        "loops": {},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
        "lr_schedulers": [],
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)

    assert read_checkpoint(path)["global_step"] == 120
    assert load_backbone_weights(dst, path)["format"] == "solo-learn"
    assert_same_weights(src, dst)


def test_bare_timm_state_dict_loads(tmp_path):
    src, dst = tiny_vit(0), tiny_vit(1)
    path = tmp_path / "vit.pt"
    torch.save(src.state_dict(), path)
    assert load_backbone_weights(dst, path)["format"] == "timm"
    assert_same_weights(src, dst)


def test_wrong_depth_raises_and_lists_keys_without_partial_load():
    dst = tiny_vit(1, depth=2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_backbone_weights(dst, {"model": tiny_vit(0, depth=3).state_dict()})
    message = str(err.value)
    assert "(mae format) does not fit VisionTransformer" in message
    assert "12 unexpected: blocks.2.norm1.weight, blocks.2.norm1.bias," in message
    assert "missing" not in message and "mismatch" not in message
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_renamed_key_reported_as_missing_and_unexpected():
    sd = dict(tiny_vit(0).state_dict())
    sd["final_norm.weight"] = sd.pop("norm.weight")
    with pytest.raises(CheckpointError) as err:
        load_backbone_weights(tiny_vit(1), sd)
    message = str(err.value)
    assert "1 missing: norm.weight\n" in message
    assert "1 unexpected: final_norm.weight" in message


def test_shape_mismatch_lists_shapes_and_counts():
    with pytest.raises(CheckpointError) as err:
        load_backbone_weights(tiny_vit(1, embed_dim=32), tiny_vit(0, embed_dim=64).state_dict())
    message = str(err.value)
    assert "30 shape mismatch (checkpoint vs model): cls_token (1, 1, 64) vs (1, 1, 32)" in message
    assert "... (30 in all)" in message
    # pos_embed widths differ, so it is reported, not interpolated
    assert "pos_embed (1, 17, 64) vs (1, 17, 32)" in message


def test_pickled_custom_class_is_refused(tmp_path):
    path = tmp_path / "with_args.pth"
    torch.save({"model": tiny_vit(0).state_dict(), "args": NotATensor()}, path)
    with pytest.raises(CheckpointError) as err:
        load_backbone_weights(tiny_vit(1), path)
    message = str(err.value)
    assert message.startswith(
        f"'{path}': refused to load: it contains pickled Python objects beyond tensors "
        "(weights_only=True); re-save it with torch.save(state_dict)"
    )
    assert "NotATensor" in message
    assert "\n" not in message


def test_missing_file_and_bad_suffix_and_corrupt_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "absent.ckpt")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(
        CheckpointError, match=r"unsupported checkpoint suffix '\.bin'; expected one of \.ckpt"
    ):
        read_checkpoint(tmp_path / "weights.bin")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        read_checkpoint(tmp_path / "broken.pth")


def test_unknown_layout_lists_top_level_keys():
    with pytest.raises(CheckpointError, match="top-level keys found: epoch, weights$"):
        extract_backbone_state_dict({"weights": {"a": torch.zeros(1)}, "epoch": 1})
    with pytest.raises(CheckpointError, match="state_dict keys: classifier.weight"):
        extract_backbone_state_dict({"state_dict": {"classifier.weight": torch.zeros(1)}})


def tiny_masked_vit(seed: int, img_size: int = 32) -> MaskedViT:
    torch.manual_seed(seed)
    kwargs = {"img_size": img_size, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    return build_backbone("vit_tiny", kwargs).eval()


def test_mae_checkpoint_of_timm_vit_gives_same_features_in_masked_vit(tmp_path):
    src, dst = tiny_vit(0), tiny_masked_vit(1)
    path, x = saved_mae_pretrain(tmp_path, src, dst)

    assert load_backbone_weights(dst, path)["format"] == "mae"

    torch.testing.assert_close(dst(x), src(x))


def test_masked_vit_lightning_checkpoint_round_trips(tmp_path):
    src, dst = tiny_masked_vit(0), tiny_masked_vit(1)
    state_dict = {f"backbone.{k}": v for k, v in src.state_dict().items()}
    state_dict["decoder.decoder_pred.weight"] = torch.randn(192, 16)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state_dict, "epoch": 0}, path)

    report = load_backbone_weights(dst, path)

    assert report == {
        "format": "solo-learn",
        "num_tensors": len(src.state_dict()),
        "pos_embed_interpolated": False,
    }
    assert_same_weights(src, dst)
    assert dst.pos_embed.requires_grad is False  # loading must not make the frozen embedding trainable
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_masked_vit_at_larger_image_gets_interpolated_pos_embed():
    src, dst = tiny_masked_vit(0, img_size=32), tiny_masked_vit(1, img_size=64)
    report = load_backbone_weights(dst, {"model": src.state_dict()})
    assert report["pos_embed_interpolated"] is True
    torch.testing.assert_close(dst.pos_embed, interpolate_pos_embed(src.pos_embed.detach(), 8))
    assert dst.forward_features(torch.randn(2, 3, 64, 64), mask_ratio=0.75).tokens.shape == (2, 1 + 16, 32)


def test_corrupt_safetensors_and_non_dictionary(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors': not a readable safetensors file") as err:
        read_checkpoint(tmp_path)  # a folder stands for its model.safetensors
    assert err.value.__cause__ is not None
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt': expected a dictionary, the file holds a list"):
        read_checkpoint(tmp_path / "list.pt")
