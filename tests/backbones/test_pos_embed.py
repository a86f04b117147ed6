import math

import pytest
import torch

from solo_ext.backbones import MaskedViT, get_2d_sincos_pos_embed, interpolate_pos_embed


def test_shapes_and_zero_cls_row():
    assert get_2d_sincos_pos_embed(8, 3).shape == (9, 8)
    with_cls = get_2d_sincos_pos_embed(8, 3, cls_token=True)
    assert with_cls.shape == (10, 8) and with_cls.dtype == torch.float32
    assert torch.equal(with_cls[0], torch.zeros(8))
    torch.testing.assert_close(with_cls[1:], get_2d_sincos_pos_embed(8, 3))


def test_values_follow_the_mae_formula():
    dim, grid = 16, 3
    emb = get_2d_sincos_pos_embed(dim, grid)
    quarter = dim // 4
    for row in range(grid):
        for col in range(grid):
            expected = []
            for position in (col, row):  # first half: column, second half: row
                omegas = [1 / 10000 ** (i / quarter) for i in range(quarter)]
                expected += [math.sin(position * w) for w in omegas] + [
                    math.cos(position * w) for w in omegas
                ]
            torch.testing.assert_close(emb[row * grid + col], torch.tensor(expected))


def test_embed_dim_must_be_a_multiple_of_four():
    with pytest.raises(ValueError, match="embed_dim=6"):
        get_2d_sincos_pos_embed(6, 2)


def test_interpolation_keeps_cls_and_constants():
    pos = torch.randn(1, 1 + 4 * 4, 8)
    assert interpolate_pos_embed(pos, 4) is pos
    resized = interpolate_pos_embed(pos, 7)
    assert resized.shape == (1, 1 + 49, 8)
    assert torch.equal(resized[:, 0], pos[:, 0])
    constant = torch.cat([torch.zeros(1, 1, 8), torch.ones(1, 16, 8) * torch.arange(8.0)], dim=1)
    torch.testing.assert_close(
        interpolate_pos_embed(constant, 2)[:, 1:], torch.ones(1, 4, 8) * torch.arange(8.0)
    )


def test_interpolation_moves_a_checkpoint_to_another_image_size():
    large = MaskedViT(img_size=64, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    small = MaskedViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    state = large.state_dict()
    state["pos_embed"] = interpolate_pos_embed(state["pos_embed"], small.grid_size)
    small.load_state_dict(state)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 32)


def test_interpolation_rejects_non_square_grids():
    with pytest.raises(ValueError, match="not a square grid"):
        interpolate_pos_embed(torch.randn(1, 1 + 12, 8), 4)
