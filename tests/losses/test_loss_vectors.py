"""Every loss against the reference values and gradients in tests/fixtures/testvectors/losses.pt.

The vectors come from the papers' own implementations (see the README beside the file).
"""

from pathlib import Path

import pytest
import torch

from solo_ext.losses.mae import mae_loss_func
from solo_ext.losses.magma import magma_loss
from solo_ext.losses.tcr import tcr_loss
from solo_ext.losses.uniformity import uniformity_loss

# the papers' own code's values, kept in the repository so the test never skips
VECTORS = Path(__file__).resolve().parents[1] / "fixtures" / "testvectors" / "losses.pt"

# relative to the largest reference magnitude; float32 loses a few digits in the log-det
TOLERANCE = {torch.float64: 1e-10, torch.float32: 5e-5}

MAGMA_VARIANTS = {
    "default": {},
    "rbf2": {"rbf_scale": 2.0},
    "scaled": {"scale_euclidean_distance": True},
    "gamma5": {"fixed_gamma": 5.0},
}

# (prefix in the file, function computing {suffix: tensor} from the vectors at a dtype)
CASES = {}


def _leaf(vectors, key, dtype):
    return vectors[key].to(dtype).clone().requires_grad_()


def _uniformity(vectors, dtype):
    z = _leaf(vectors, "features", dtype)
    loss = uniformity_loss(z)
    loss.backward()
    return {"loss": loss, "grad": z.grad}


CASES["uniformity"] = _uniformity


def _tcr_case(mu, centering):
    def run(vectors, dtype):
        z = _leaf(vectors, "features", dtype)
        loss = tcr_loss(z, mu=mu, centering=centering)
        loss.backward()
        return {"loss": loss, "grad": z.grad}

    return run


for _mu in (1, 3):
    for _centering in (0, 1):
        CASES[f"tcr.mu{_mu}.centering{_centering}"] = _tcr_case(float(_mu), bool(_centering))


def _magma_case(kwargs):
    def run(vectors, dtype):
        x = _leaf(vectors, "magma.x", dtype)
        y = _leaf(vectors, "magma.y", dtype)
        loss = magma_loss(x, y, **kwargs)
        loss.backward()
        return {"loss": loss, "grad_x": x.grad, "grad_y": y.grad}

    return run


for _name, _kwargs in MAGMA_VARIANTS.items():
    CASES[f"magma.{_name}"] = _magma_case(_kwargs)


def _mae_case(norm_pix_loss):
    def run(vectors, dtype):
        pred = _leaf(vectors, "mae.pred", dtype)
        imgs = vectors["mae.imgs"].to(dtype)
        mask = vectors["mae.mask"].to(dtype)
        loss = mae_loss_func(imgs, pred, mask, patch_size=4, norm_pix_loss=norm_pix_loss)
        loss.backward()
        return {"loss": loss, "grad_pred": pred.grad}

    return run


for _norm in (0, 1):
    CASES[f"mae.norm_pix{_norm}"] = _mae_case(bool(_norm))

INPUT_KEYS = {"features", "magma.x", "magma.y", "mae.imgs", "mae.pred", "mae.mask"}


@pytest.fixture(scope="module")
def vectors():
    return torch.load(VECTORS, weights_only=True)


def test_every_reference_entry_is_checked(vectors):
    checked = set(INPUT_KEYS)
    for prefix, run in CASES.items():
        checked |= {f"{prefix}.{suffix}" for suffix in run(vectors, torch.float64)}
    assert checked == set(vectors)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("prefix", list(CASES))
def test_matches_reference(vectors, prefix, dtype):
    results = CASES[prefix](vectors, dtype)
    for suffix, actual in results.items():
        expected = vectors[f"{prefix}.{suffix}"]
        assert actual.dtype == dtype
        scale = expected.abs().max().item()
        torch.testing.assert_close(
            actual.detach().double(),
            expected,
            rtol=TOLERANCE[dtype],
            atol=TOLERANCE[dtype] * scale,
            msg=lambda m, s=suffix: f"{prefix}.{s} at {dtype}: {m}",
        )
