"""MAGMA over several layers: one graph per listed block, each asking the target block's features
to be smooth on it, averaged over the blocks that actually enter (the target itself gives no term).

The expected values are re-derived here from the pairwise form of the loss, in float64."""

import pytest
import torch
from omegaconf import OmegaConf

from solo_ext.config.pretrain import parse_cfg
from solo_ext.losses.mae import mae_loss_func
from solo_ext.methods import METHODS
from solo_ext.regularizers.magma import Magma, MagmaSpec
from solo_ext.utils.index_noise import index_noise
from tests.losses.test_magma_loss import _pairwise_form
from tests.methods.tiny import tiny_cfg

DEPTH = 4


def _block_outputs(seed=0, batch=6, tokens=5, dim=7):
    """(N, 1 + patches, D) outputs of every block; what the regularizer reads is the mean of the
    patch tokens (the cls token, first, is left out)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, tokens, dim, generator=generator, dtype=torch.float64) for _ in range(DEPTH)]


def _regularizer(**spec):
    return Magma(MagmaSpec.model_validate({"weight": 1.0, "gather": False, **spec}, context={"depth": DEPTH}))


def _mean_patches(block):
    return block[:, 1:].mean(dim=1)


@pytest.mark.parametrize(
    "layers, target, terms",
    [
        ([0], -1, [0]),
        ([0, 1], -1, [0, 1]),
        ([2, 0, 1], 3, [0, 1, 2]),
        ([0, 1, -1], -1, [0, 1]),  # the target listed too: two terms, not three
        ([1, -3, 0], 2, [0, 1]),  # the same block twice (1 and -3): one term
        ([0, 3], 1, [0, 3]),  # a target before a listed block
    ],
)
def test_the_mean_over_the_layer_terms(layers, target, terms):
    blocks = _block_outputs()
    reg = _regularizer(layers=layers, target_layer=target, rbf_scale=1.5)
    positions = {block: block for block in range(DEPTH)}
    loss, logs = reg({"blocks": blocks}, positions)
    target_block = target % DEPTH
    y = _mean_patches(blocks[target_block])
    expected = {layer: _pairwise_form(_mean_patches(blocks[layer]), y, rbf_scale=1.5) for layer in terms}
    assert reg.blocks() == {*terms, target_block}
    assert set(logs) == {f"train_magma_layer{layer}_to_layer{target_block}_loss" for layer in terms}
    for layer, value in expected.items():
        torch.testing.assert_close(logs[f"train_magma_layer{layer}_to_layer{target_block}_loss"], value)
    torch.testing.assert_close(loss, sum(expected.values()) / len(terms), rtol=1e-12, atol=0)


def test_block_positions_map_indices_to_the_returned_outputs():
    # the model returns only the blocks asked for, in sorted order; positions say which is which
    blocks = _block_outputs(seed=1)
    reg = _regularizer(layers=[1, 2], target_layer=3)
    asked = sorted(reg.blocks())
    loss, _ = reg({"blocks": [blocks[b] for b in asked]}, {b: i for i, b in enumerate(asked)})
    y = _mean_patches(blocks[3])
    expected = (_pairwise_form(_mean_patches(blocks[1]), y) + _pairwise_form(_mean_patches(blocks[2]), y)) / 2
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_training_loss_averages_the_layers(tmp_path):
    # the whole step of a depth-3 model: MAGMA on blocks 0 and 1 towards block 2 (flat keys, as the
    # MAGMA recipes write them: the last listed block is the target)
    cfg = tiny_cfg(
        tmp_path,
        method_kwargs={
            "layers": [0, 1, 2],
            "reg_scheduler": {"name": "constant", "weight": 0.5},
            "index_masks": True,  # the masks are a function of the sample indices: recomputable here
        },
    )
    cfg["backbone"]["kwargs"]["depth"] = 3
    cfg = parse_cfg(cfg)
    magma = OmegaConf.to_container(cfg.method_kwargs.regularizers.magma)
    assert magma["layers"] == [0, 1] and magma["target_layer"] == 2
    model = METHODS[cfg.method](cfg)
    model.log_dict = lambda *a, **k: None  # no trainer attached
    torch.manual_seed(0)
    batch = [torch.arange(16), [torch.randn(16, 3, 32, 32)], torch.randint(0, 10, (16,))]
    model._weights = model.current_weights(0)
    assert model._weights == {"magma": 0.5}
    total = model.training_step(batch, 0)

    noise = index_noise(batch[0], model.backbone.num_patches, model.cfg.seed, 0, 0)
    out = model.backbone.forward_features(batch[1][0], 0.75, (0, 1, 2), noise=noise)
    recon = mae_loss_func(batch[1][0], model.decoder(out.tokens, out.ids_restore), out.mask, 8, False)
    y = _mean_patches(out.blocks[2]).double()
    terms = [_pairwise_form(_mean_patches(out.blocks[layer]).double(), y) for layer in (0, 1)]
    logits = model.classifier(out.tokens[:, 0].detach())
    expected = recon + 0.5 * sum(terms) / 2 + torch.nn.functional.cross_entropy(logits, batch[2])
    torch.testing.assert_close(total.double(), expected.double(), rtol=1e-5, atol=1e-6)
