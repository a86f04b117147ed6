import pytest
import torch
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer

from solo_ext.backbones import BACKBONES, MAEDecoder, MaskedViT, build_backbone, get_2d_sincos_pos_embed
from solo_ext.config.errors import ConfigError, validate
from solo_ext.config.schema import Backbone

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def tiny_vit(**overrides) -> MaskedViT:
    torch.manual_seed(0)
    return MaskedViT(**{**TINY, **overrides}).eval()


def images(n: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def manual_block_outputs(
    model: MaskedViT, x: torch.Tensor, mask_ratio: float, seed: int
) -> list[torch.Tensor]:
    """Outputs of every block, recomputed step by step from the model's parts."""
    tokens = model.patch_embed(x) + model.pos_embed[:, 1:]
    if mask_ratio > 0:
        torch.manual_seed(seed)
        tokens, _, _ = model.random_masking(tokens, mask_ratio)
    cls = model.cls_token + model.pos_embed[:, :1]
    tokens = torch.cat([cls.expand(x.shape[0], -1, -1), tokens], dim=1)
    outputs = []
    for block in model.blocks:
        tokens = block(tokens)
        outputs.append(tokens)
    return outputs


def test_output_shapes_with_masking():
    model = tiny_vit()
    out = model.forward_features(images(), mask_ratio=0.75, block_indices=(0, 1))
    num_patches, kept = 16, 4
    assert model.num_patches == num_patches
    assert out.tokens.shape == (3, 1 + kept, 32)
    assert out.mask.shape == (3, num_patches) and out.mask.dtype == torch.float32
    assert out.ids_restore.shape == (3, num_patches) and out.ids_restore.dtype == torch.long
    assert [b.shape for b in out.blocks] == [(3, 1 + kept, 32)] * 2
    assert model(images()).shape == (3, 32)


def test_no_masking_returns_all_tokens_and_no_mask():
    out = tiny_vit().forward_features(images())
    assert out.tokens.shape == (3, 17, 32)
    assert out.mask is None and out.ids_restore is None and out.blocks == ()


@pytest.mark.parametrize("mask_ratio", [0.75, 0.5, 0.3, 0.9])
def test_mask_removes_the_right_number_per_row(mask_ratio):
    model = tiny_vit(img_size=32, patch_size=4)  # 64 patches
    torch.manual_seed(3)
    out = model.forward_features(images(), mask_ratio=mask_ratio)
    kept = int(64 * (1 - mask_ratio))
    assert out.tokens.shape[1] == 1 + kept
    assert set(out.mask.unique().tolist()) <= {0.0, 1.0}
    assert (out.mask.sum(dim=1) == 64 - kept).all()
    if mask_ratio == 0.75:
        assert (out.mask.sum(dim=1) == int(64 * mask_ratio)).all()
    # per-sample noise: the rows do not all drop the same patches
    assert not (out.mask == out.mask[:1]).all()


def test_ids_restore_unshuffles_kept_tokens():
    torch.manual_seed(4)
    x = torch.randn(4, 16, 8)
    kept, mask, ids_restore = MaskedViT.random_masking(x, 0.75)
    placeholders = torch.zeros(4, 16 - kept.shape[1], 8)
    restored = torch.cat([kept, placeholders], dim=1).gather(1, ids_restore[..., None].expand(-1, -1, 8))
    visible = mask == 0
    assert torch.equal(restored[visible], x[visible])
    assert torch.equal(restored[~visible], torch.zeros_like(restored[~visible]))


def test_bad_mask_ratios_raise():
    x = torch.randn(2, 16, 8)
    for ratio in (1.0, -0.1, 0.99):
        with pytest.raises(ValueError, match="mask_ratio"):
            MaskedViT.random_masking(x, ratio)
    with pytest.raises(ValueError, match="mask_ratio=-0.5"):
        tiny_vit().forward_features(images(), mask_ratio=-0.5)


@pytest.mark.parametrize("mask_ratio", [0.0, 0.5])
def test_block_outputs_equal_a_manual_pass(mask_ratio):
    model = tiny_vit(depth=3)
    x = images()
    expected = manual_block_outputs(model, x, mask_ratio, seed=7)
    torch.manual_seed(7)
    out = model.forward_features(x, mask_ratio=mask_ratio, block_indices=(-1, 0, 1, -3))
    for got, want in zip(out.blocks, [expected[2], expected[0], expected[1], expected[0]]):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(out.tokens, model.norm(expected[-1]))


def test_out_of_range_block_index_raises():
    model = tiny_vit()
    for index in (2, -3):
        with pytest.raises(IndexError, match="out of range"):
            model.forward_features(images(), block_indices=(0, index))


def test_forward_is_the_cls_token_of_the_full_image():
    model = tiny_vit()
    x = images()
    torch.testing.assert_close(model(x), model.forward_features(x).tokens[:, 0])


def test_pool_modes():
    tokens = torch.randn(2, 5, 4)
    assert torch.equal(MaskedViT.pool(tokens, "cls"), tokens[:, 0])
    torch.testing.assert_close(MaskedViT.pool(tokens, "mean"), tokens[:, 1:].mean(dim=1))
    with pytest.raises(KeyError, match="'max'"):
        MaskedViT.pool(tokens, "max")


def timm_vit(**overrides) -> VisionTransformer:
    sizes = {**TINY, **overrides}
    return VisionTransformer(**sizes, num_classes=0, global_pool="token").eval()


def test_state_dict_matches_timm_names_and_shapes():
    ours = {k: v.shape for k, v in tiny_vit().state_dict().items()}
    theirs = {k: v.shape for k, v in timm_vit().state_dict().items() if not k.startswith(("head", "fc_norm"))}
    assert ours == theirs


def test_timm_weights_give_timm_features():
    torch.manual_seed(5)
    reference = timm_vit(depth=3)
    # timm initialises pos_embed randomly: loading it proves the stored embedding is the one used
    model = tiny_vit(depth=3)
    model.load_state_dict(reference.state_dict(), strict=True)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.forward_features(x)[:, 0], rtol=1e-5, atol=1e-5)


def test_pos_embed_is_fixed_sincos_and_frozen():
    model = tiny_vit()
    assert not model.pos_embed.requires_grad
    assert "pos_embed" in model.state_dict()
    torch.testing.assert_close(model.pos_embed[0], get_2d_sincos_pos_embed(32, 4, cls_token=True))
    assert model.no_weight_decay() == {"cls_token", "pos_embed"}


def test_mae_initialisation():
    model = tiny_vit()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
        if isinstance(module, torch.nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert module.eps == 1e-6
    fc1 = model.blocks[0].mlp.fc1.weight  # xavier-uniform bound sqrt(6 / (fan_in + fan_out))
    assert fc1.abs().max() <= (6 / (32 + 128)) ** 0.5
    assert model.cls_token.abs().max() < 0.2


def test_every_trainable_parameter_gets_a_gradient_on_the_mae_path():
    model = tiny_vit().train()
    decoder = MAEDecoder(32, 16, 1, 2, model.num_patches, model.patch_size).train()
    out = model.forward_features(images(), mask_ratio=0.75)
    pred = decoder(out.tokens, out.ids_restore)
    per_patch = (pred - torch.randn_like(pred)).pow(2).mean(dim=-1)
    loss = (per_patch * out.mask).sum() / out.mask.sum()  # masked patches only, as MAE
    loss.backward()
    for module in (model, decoder):
        for name, param in module.named_parameters():
            if param.requires_grad:
                assert param.grad is not None and param.grad.abs().sum() > 0, name
            else:
                assert param.grad is None, name


def test_fused_attention_is_on():
    model = tiny_vit()
    assert all(block.attn.fused_attn for block in model.blocks)


def test_drop_path_rises_to_the_rate():
    model = tiny_vit(depth=3, drop_path_rate=0.2)
    rates = [getattr(block.drop_path1, "drop_prob", 0.0) for block in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    assert isinstance(model.blocks[-1].drop_path1, DropPath)


@pytest.mark.parametrize(
    ("name", "dim", "depth", "heads", "patch"),
    [
        ("vit_tiny", 192, 12, 12, 16),
        ("vit_small", 384, 12, 12, 16),
        ("vit_base", 768, 12, 12, 16),
        ("vit_large", 1024, 24, 16, 16),
        ("vit_huge", 1280, 32, 16, 14),
    ],
)
def test_factory_sizes_match_timm(name, dim, depth, heads, patch):
    # the meta device builds full-size models without allocating their weights
    with torch.device("meta"):
        model = BACKBONES[name]()
        reference = VisionTransformer(
            patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, num_classes=0, global_pool="token"
        )
    assert (model.embed_dim, model.num_features, model.depth, model.patch_size) == (dim, dim, depth, patch)
    assert model.blocks[0].attn.num_heads == heads
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


def test_factory_overrides_shrink_the_model():
    model = build_backbone("vit_base", {**TINY, "patch_size": 4, "mlp_ratio": 2.0, "drop_path_rate": 0.1})
    assert (model.embed_dim, model.depth, model.num_patches, model.img_size) == (32, 2, 64, 32)
    assert model.blocks[0].mlp.fc1.out_features == 64
    assert BACKBONES["vit_huge"](**{**TINY, "patch_size": 8}).patch_size == 8


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"img_size": 30}, "backbone.kwargs.patch_size=8: must divide backbone.kwargs.img_size=30"),
        ({"embed_dim": 36, "num_heads": 5}, "backbone.kwargs.num_heads=5: must divide"),
        ({"embed_dim": 6, "num_heads": 3}, "backbone.kwargs.embed_dim=6: must be divisible by 4"),
        ({"depth": 0}, "backbone.kwargs.depth=0: must be an integer >= 1"),
        ({"img_size": "32"}, "backbone.kwargs.img_size='32': must be an integer"),
        ({"patch_size": True}, "backbone.kwargs.patch_size=True: must be an integer"),
        ({"drop_path_rate": 1.0}, r"backbone.kwargs.drop_path_rate=1.0: must be a number in \[0, 1\)"),
        ({"drop_path_rate": -0.1}, "backbone.kwargs.drop_path_rate=-0.1"),
        ({"mlp_ratio": 0}, "backbone.kwargs.mlp_ratio=0: must be a number > 0"),
    ],
)
def test_invalid_sizes_raise_config_error(overrides, key):
    with pytest.raises(ConfigError, match=f"^{key}") as error:
        validate(Backbone, {"name": "vit_tiny", "kwargs": {**TINY, **overrides}}, "backbone")
    assert "\n" not in str(error.value)


def test_unknown_backbone_name_suggests_the_closest():
    with pytest.raises(ConfigError) as error:
        validate(Backbone, {"name": "vit_tinyy"}, "backbone")
    message = str(error.value)
    assert message.startswith("backbone.name='vit_tinyy': must be one of vit_tiny, vit_small")
    assert message.endswith("did you mean 'vit_tiny'?")


def test_unknown_backbone_kwarg_lists_the_allowed_ones():
    with pytest.raises(
        ConfigError, match="^backbone.kwargs.patchsize=8: unknown key; allowed: depth, drop_path_rate"
    ):
        validate(Backbone, {"name": "vit_tiny", "kwargs": {"patchsize": 8}}, "backbone")
