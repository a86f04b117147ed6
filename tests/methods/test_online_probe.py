"""The online linear probe's options (README, Evaluation): ``online_clean_features`` trains it on the
full image's features (one extra no-grad pass), ``online_batchnorm`` puts MAE's affine-free
BatchNorm before it, and MAGMA's ``reset_classifier`` re-initialises it every 10 epochs."""

import pytest
import torch
from omegaconf import OmegaConf

from solo_ext.config.pretrain import parse_cfg
from solo_ext.methods import METHODS
from solo_ext.run.pretrain import run_pretrain
from tests.methods.tiny import tiny_cfg


def _model(tmp_path, **method_kwargs):
    model = METHODS["mae-reg"](parse_cfg(tiny_cfg(tmp_path, method_kwargs=method_kwargs)))
    torch.manual_seed(0)
    return model, torch.randn(4, 3, 32, 32)


@pytest.mark.parametrize("clean", [False, True])
def test_the_probe_trains_on_clean_or_masked_features(tmp_path, clean):
    model, x = _model(tmp_path, online_clean_features=clean)
    torch.manual_seed(1)
    out = model.training_forward(x)
    full = model(x)  # the cls token of the unmasked image
    masked = out["tokens"][:, 0]  # the cls token of the masked pass
    assert torch.allclose(out["feats"], full) == clean
    assert torch.allclose(out["feats"], masked) != clean
    assert out["feats"].requires_grad != clean  # the clean pass has no graph


def test_batchnorm_before_the_probe(tmp_path):
    plain, _ = _model(tmp_path)
    assert isinstance(plain.classifier_norm, torch.nn.Identity)
    model, x = _model(tmp_path, online_batchnorm=True)
    norm = model.classifier_norm
    assert isinstance(norm, torch.nn.BatchNorm1d) and not norm.affine and norm.momentum == 0.5
    feats = torch.randn(8, model.features_dim) * 5 + 3
    targets = torch.randint(0, model.num_classes, (8,))
    loss, *_ = model.online_classifier_loss(feats, targets)
    normed = (feats - feats.mean(0)) / torch.sqrt(feats.var(0, unbiased=False) + norm.eps)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(model.classifier(normed), targets))


@pytest.mark.slow
@pytest.mark.parametrize("reset", [False, True])
def test_reset_classifier_every_10_epochs(tmp_path, monkeypatch, reset):
    # after the 10th epoch's validation the probe and its BatchNorm start afresh: running
    # statistics back to mean 0, variance 1, no batch counted
    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg(
        tmp_path,
        method_kwargs={"online_batchnorm": True, "reset_classifier": reset},
        max_epochs=10,
        limit_train_batches=1,
        limit_val_batches=1,
        knn_eval={"enabled": False},
        checkpoint={"enabled": False, "dir": str(tmp_path / "tm")},
    )
    norm = run_pretrain(OmegaConf.create(cfg)).lightning_module.classifier_norm
    assert (norm.num_batches_tracked.item() == 0) == reset
    assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean)) == reset
