import pytest
import torch

from solo_ext.losses.mae import mae_loss_func, patchify, unpatchify


def test_patchify_layout_is_row_col_channel():
    # image value encodes (channel, row, col) so every element of a patch can be identified
    c, h, w, p = 3, 4, 4, 2
    rows = torch.arange(h).view(1, h, 1).expand(c, h, w)
    cols = torch.arange(w).view(1, 1, w).expand(c, h, w)
    chans = torch.arange(c).view(c, 1, 1).expand(c, h, w)
    imgs = (100 * chans + 10 * rows + cols).unsqueeze(0).float()
    patches = patchify(imgs, p)
    assert patches.shape == (1, 4, p * p * c)
    # patch 1 is grid row 0, grid col 1: image rows 0-1, cols 2-3
    expected = [100 * ch + 10 * r + col for r in (0, 1) for col in (2, 3) for ch in range(c)]
    assert patches[0, 1].tolist() == expected
    # patch 2 is grid row 1, grid col 0
    assert patches[0, 2, 0].item() == 10 * 2 + 0


@pytest.mark.parametrize("shape", [(1, 3, 8, 12), (1, 3, 10, 10)])
def test_patchify_rejects_bad_sizes(shape):
    # torch's reshape refuses; the config declares that patch_size divides the square crop
    with pytest.raises(RuntimeError, match="invalid for input of size"):
        patchify(torch.zeros(shape), 4)


@pytest.mark.parametrize("channels", [1, 3])
def test_unpatchify_inverts_patchify(channels):
    imgs = torch.randn(2, channels, 12, 12)
    patches = patchify(imgs, 4)
    assert torch.equal(unpatchify(patches, 4, channels=channels), imgs)
    assert torch.equal(patchify(unpatchify(patches, 4, channels), 4), patches)


def test_unpatchify_rejects_inconsistent_shapes():
    with pytest.raises(RuntimeError, match="invalid for input of size"):
        unpatchify(torch.zeros(1, 5, 48), 4)
    with pytest.raises(RuntimeError, match="invalid for input of size"):
        unpatchify(torch.zeros(1, 4, 48), 4, channels=1)


def _slow_mae_loss(imgs, pred, mask, p, norm_pix_loss):
    n, c, h, w = imgs.shape
    g = h // p
    total, count = 0.0, 0
    for i in range(n):
        for patch in range(g * g):
            if mask[i, patch] == 0:
                continue
            r, q = divmod(patch, g)
            block = imgs[i, :, r * p : (r + 1) * p, q * p : (q + 1) * p]  # (c, p, p)
            target = block.permute(1, 2, 0).reshape(-1)
            if norm_pix_loss:
                mean = target.sum() / target.numel()
                var = ((target - mean) ** 2).sum() / (target.numel() - 1)
                target = (target - mean) / (var + 1e-6) ** 0.5
            total += ((pred[i, patch] - target) ** 2).sum() / target.numel()
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_mae_loss_matches_slow_reference(norm_pix_loss):
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    pred = torch.randn(2, 4, 12, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    loss = mae_loss_func(imgs, pred, mask, 2, norm_pix_loss)
    torch.testing.assert_close(loss, _slow_mae_loss(imgs, pred, mask, 2, norm_pix_loss), rtol=1e-12, atol=0)


def test_visible_patches_do_not_count():
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 4, 4)
    pred = torch.randn(2, 4, 12, requires_grad=True)
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    mae_loss_func(imgs, pred, mask, 2).backward()
    assert torch.all(pred.grad[~mask] == 0)
    assert torch.all(pred.grad[mask].abs().sum(-1) > 0)


def test_perfect_prediction_gives_zero():
    imgs = torch.randn(1, 3, 8, 8)
    mask = torch.ones(1, 16)
    assert mae_loss_func(imgs, patchify(imgs, 2), mask, 2).item() == 0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="pred"):
        mae_loss_func(torch.zeros(1, 3, 8, 8), torch.zeros(1, 4, 10), torch.ones(1, 4), 4)
    with pytest.raises(ValueError, match="mask"):
        mae_loss_func(torch.zeros(1, 3, 8, 8), torch.zeros(1, 4, 48), torch.ones(1, 5), 4)


def test_bf16_autocast_computes_in_float32():
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 4, 4)
    head = torch.nn.Linear(12, 12)
    tokens = torch.randn(2, 4, 12)
    mask = torch.tensor([[1.0, 0, 1, 1], [0, 1, 1, 0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = head(tokens)
        loss = mae_loss_func(imgs, pred, mask, 2, norm_pix_loss=True)
    assert pred.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and loss.dim() == 0
    expected = mae_loss_func(imgs.double(), pred.double(), mask.double(), 2, norm_pix_loss=True)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)


def test_unpatchify_defaults_to_three_channels():
    imgs = torch.randn(2, 3, 8, 8)
    assert torch.equal(unpatchify(patchify(imgs, 4), 4), imgs)


def test_shape_mismatch_names_the_shapes_expected():
    message = r"^pred \(1, 4, 10\) and mask \(1, 4\) must be \(1, 4, 48\) and \(1, 4\), the patchified"
    with pytest.raises(ValueError, match=message):
        mae_loss_func(torch.zeros(1, 3, 8, 8), torch.zeros(1, 4, 10), torch.ones(1, 4), 4)
