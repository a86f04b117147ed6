import pytest
import torch

from solo_ext.backbones import MAEDecoder, MaskedViT, get_2d_sincos_pos_embed
from solo_ext.config.errors import ConfigError, validate
from solo_ext.config.schema import MAEKwargs


def make_decoder(**overrides) -> MAEDecoder:
    torch.manual_seed(0)
    sizes = {"in_dim": 32, "embed_dim": 16, "depth": 2, "num_heads": 2, "num_patches": 16, "patch_size": 8}
    return MAEDecoder(**{**sizes, **overrides}).eval()


def masked_tokens(n: int = 3, length: int = 16, ratio: float = 0.75, dim: int = 32):
    torch.manual_seed(1)
    kept, mask, ids_restore = MaskedViT.random_masking(torch.randn(n, length, dim), ratio)
    tokens = torch.cat([torch.randn(n, 1, dim), kept], dim=1)
    return tokens, mask, ids_restore


@pytest.mark.parametrize("in_chans", [3, 1])
def test_prediction_shape(in_chans):
    decoder = make_decoder(in_chans=in_chans)
    tokens, _, ids_restore = masked_tokens()
    assert decoder(tokens, ids_restore).shape == (3, 16, 8 * 8 * in_chans)


def test_forward_equals_a_per_sample_reassembly():
    decoder = make_decoder()
    tokens, mask, ids_restore = masked_tokens()
    embedded = decoder.decoder_embed(tokens)
    rows = []
    for n in range(tokens.shape[0]):
        sequence = [embedded[n, 0]]
        for j in range(16):
            # a kept patch's rank in the shuffled order is its index among the visible tokens
            sequence.append(decoder.mask_token[0, 0] if mask[n, j] else embedded[n, 1 + ids_restore[n, j]])
        rows.append(torch.stack(sequence))
    x = torch.stack(rows) + decoder.decoder_pos_embed
    expected = decoder.decoder_pred(decoder.decoder_norm(decoder.decoder_blocks(x)))[:, 1:]
    torch.testing.assert_close(decoder(tokens, ids_restore), expected)


def test_full_image_with_identity_order():
    decoder = make_decoder()
    tokens = torch.randn(2, 17, 32)
    pred = decoder(tokens, torch.arange(16).expand(2, -1))
    assert pred.shape == (2, 16, 192)


def test_parameter_names_and_frozen_positions():
    decoder = make_decoder()
    prefixes = {name.split(".")[0] for name in decoder.state_dict()}
    assert prefixes == {
        "decoder_embed",
        "mask_token",
        "decoder_pos_embed",
        "decoder_blocks",
        "decoder_norm",
        "decoder_pred",
    }
    assert not decoder.decoder_pos_embed.requires_grad
    torch.testing.assert_close(decoder.decoder_pos_embed[0], get_2d_sincos_pos_embed(16, 4, cls_token=True))
    assert all(block.attn.fused_attn for block in decoder.decoder_blocks)


def test_mae_initialisation():
    decoder = make_decoder()
    for module in decoder.modules():
        if isinstance(module, torch.nn.Linear):
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
        if isinstance(module, torch.nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
    assert 0 < decoder.mask_token.std() < 0.05


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"embed_dim": 16, "num_heads": 3}, "method_kwargs.decoder_num_heads=3: must divide"),
        ({"embed_dim": 6, "num_heads": 2}, "method_kwargs.decoder_embed_dim=6: must be divisible by 4"),
        ({"depth": 0}, "method_kwargs.decoder_depth=0"),
    ],
)
def test_invalid_sizes_raise_config_error(overrides, message):
    given = {f"decoder_{key}": value for key, value in overrides.items()}
    with pytest.raises(ConfigError, match=f"^{message}"):
        validate(MAEKwargs, given, "method_kwargs")
