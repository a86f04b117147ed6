"""Which features a regularizer reads (solo_ext.regularizers.base): ``cls`` the final-normed cls
token, ``mean`` the mean of the final-normed visible patch tokens, a block index the mean of that
block's visible patch tokens; each read through the gather once per crop, however many
regularizers ask; and each regularizer applies its loss, with its own parameters, to them."""

import pytest
import torch

from solo_ext.losses.tcr import tcr_loss
from solo_ext.losses.uniformity import uniformity_loss
from solo_ext.regularizers import REGULARIZERS
from solo_ext.regularizers.base import feature_of, regularized_features


def _out(seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(5, 4, 6, generator=generator, dtype=torch.float64)  # (N, 1 + patches, D)
    blocks = tuple(torch.randn(5, 4, 6, generator=generator, dtype=torch.float64) for _ in range(2))
    return {"tokens": tokens, "blocks": blocks}


def test_feature_kinds():
    out = _out()
    torch.testing.assert_close(feature_of(out, "cls", {}), out["tokens"][:, 0])
    torch.testing.assert_close(feature_of(out, "mean", {}), out["tokens"][:, 1:].mean(dim=1))
    # block 7 of the backbone is the second output the model returned
    torch.testing.assert_close(feature_of(out, 7, {3: 0, 7: 1}), out["blocks"][1][:, 1:].mean(dim=1))


def test_gathered_features_are_cached_per_crop():
    out = _out()
    first = regularized_features(out, "cls", {}, gathered=True)
    assert set(out["gathered"]) == {"cls"}
    assert regularized_features(out, "cls", {}, gathered=True) is first
    mean = regularized_features(out, "mean", {}, gathered=True)
    assert set(out["gathered"]) == {"cls", "mean"} and mean is not first
    local = _out()
    regularized_features(local, "cls", {}, gathered=False)
    assert "gathered" not in local  # not gathered: nothing cached


@pytest.mark.parametrize(
    "name, spec, loss",
    [
        ("uniformity", {"features": "mean"}, lambda z: uniformity_loss(z)),
        (
            "tcr",
            {"features": "cls", "mu": 2.5, "centering": True},
            lambda z: tcr_loss(z, mu=2.5, centering=True),
        ),
        ("tcr", {"features": 1, "mu": 0.5}, lambda z: tcr_loss(z, mu=0.5)),
    ],
)
def test_each_regularizer_applies_its_loss_to_its_features(name, spec, loss):
    cls = REGULARIZERS[name]
    reg = cls(cls.Spec.model_validate({"weight": 1.0, **spec}, context={"depth": 2}))
    out = _out(seed=3)
    value, logs = reg(out, {0: 0, 1: 1})
    torch.testing.assert_close(value, loss(feature_of(out, spec["features"], {0: 0, 1: 1})))
    assert logs == {}
    assert reg.blocks() == ({spec["features"]} if isinstance(spec["features"], int) else set())


def test_a_stored_block_builds_the_same_regularizer_as_a_validated_one():
    """A block read back from args.json (a mapping) is validated into its Spec; the regularizer
    then reads, gathers and weighs as one built from the validated Spec."""
    stored = {"scheduler": {"name": "constant", "weight": 0.5}, "features": 1, "gather": True}
    reg = REGULARIZERS["uniformity"](stored)
    again = REGULARIZERS["uniformity"](REGULARIZERS["uniformity"].Spec.model_validate(stored))
    assert reg.spec == again.spec and reg.weight(3, 2, 0.5) == 0.5 and reg.gather is True
    out = _out()
    loss, _ = reg(out, {1: 1})
    torch.testing.assert_close(loss, uniformity_loss(out["blocks"][1][:, 1:].mean(dim=1)))
    assert set(out["gathered"]) == {1}  # read through the gather, once


def test_magma_reads_every_block_through_the_gather_with_its_own_graph_options():
    from solo_ext.losses.magma import magma_loss

    spec = {"layers": [0], "target_layer": 1, "weight": 1.0, "gather": True, "fixed_gamma": 0.3}
    reg = REGULARIZERS["magma"](spec)
    out = _out()
    loss, _ = reg(out, {0: 0, 1: 1})
    x, y = (out["blocks"][i][:, 1:].mean(dim=1) for i in (0, 1))
    torch.testing.assert_close(loss, magma_loss(x, y, fixed_gamma=0.3))
    assert set(out["gathered"]) == {0, 1}
    # scaling the distances matters only with a fixed bandwidth (with the batch's, it cancels)
    scaled = REGULARIZERS["magma"]({**spec, "scale_euclidean_distance": True})
    scaled_loss = scaled(_out(), {0: 0, 1: 1})[0]
    torch.testing.assert_close(scaled_loss, magma_loss(x, y, fixed_gamma=0.3, scale_euclidean_distance=True))
    assert not torch.isclose(loss, scaled_loss)
