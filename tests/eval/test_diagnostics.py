import os

import pytest
import torch

from solo_ext.eval.diagnostics import (
    atomic_output,
    effective_rank,
    effective_rank_of_spectrum,
    plot_spectra,
    plot_spectrum,
    singular_values,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def gaussian(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_singular_values_are_of_centred_features_float64_descending():
    x = gaussian(50, 8) + 100.0  # a large mean that centring must remove
    s = singular_values(x.float())
    assert s.dtype == torch.float64 and s.device.type == "cpu" and s.shape == (8,)
    assert torch.all(s[:-1] >= s[1:])
    x64 = x.double()
    torch.testing.assert_close(s, torch.linalg.svdvals(x64 - x64.mean(0)))


def test_singular_values_rejects_bad_input():
    with pytest.raises(ValueError, match="N >= 2"):
        singular_values(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="must be finite"):
        singular_values(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))


def test_effective_rank_of_isotropic_gaussian_is_close_to_dimension():
    rank = effective_rank(gaussian(2000, 16))
    assert 15.5 < rank <= 16.0


def test_effective_rank_of_rank_one_data_is_close_to_one():
    direction = gaussian(1, 16, seed=1)
    coefficients = gaussian(2000, 1, seed=2)
    assert effective_rank(coefficients * direction) == pytest.approx(1.0, abs=1e-4)


def test_effective_rank_of_anisotropic_data_is_in_between():
    x = gaussian(2000, 16) * torch.tensor([10.0] * 4 + [0.01] * 12)
    assert 3.5 < effective_rank(x) < 5.0


def test_effective_rank_is_scale_invariant():
    x = gaussian(500, 16) * torch.linspace(0.1, 3.0, 16)
    assert effective_rank(x) == pytest.approx(effective_rank(1e4 * x), rel=1e-9)
    assert effective_rank(x) == pytest.approx(effective_rank(1e-4 * x), rel=1e-9)


def test_effective_rank_of_spectrum_handles_zeros():
    assert effective_rank_of_spectrum(torch.tensor([3.0, 3.0, 0.0, 0.0])) == pytest.approx(2.0)
    assert effective_rank_of_spectrum(torch.tensor([1.0, 1.0, 1.0])) == pytest.approx(3.0)
    assert effective_rank_of_spectrum(torch.zeros(5)) == 1.0
    # constant features: the centred matrix is zero
    assert effective_rank(torch.ones(10, 4)) == 1.0


def test_fewer_samples_than_dimensions_bounded_by_samples():
    rank = effective_rank(gaussian(5, 64))
    assert 1.0 <= rank <= 4.0 + 1e-9  # centring leaves at most N - 1 directions


def test_plot_spectrum_writes_png(tmp_path):
    path = plot_spectrum(singular_values(gaussian(200, 16)), tmp_path / "sub" / "spectrum.png", "MAE")
    assert path == tmp_path / "sub" / "spectrum.png"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert os.listdir(path.parent) == ["spectrum.png"]  # no temporary left behind


def test_plot_spectra_overlays_runs_with_zero_singular_values(tmp_path):
    collapsed = torch.randn(300, 2) @ torch.randn(2, 32)
    spectra = {"MAE": singular_values(collapsed), "U-MAE": singular_values(gaussian(300, 32))}
    path = plot_spectra(spectra, tmp_path / "spectra.png", "MAE vs U-MAE")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_atomic_output_keeps_previous_file_on_failure(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.png"]
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.png"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_pictures_get_the_usual_permissions(tmp_path, umask):
    previous = os.umask(umask)
    try:
        plot_spectrum(singular_values(gaussian(20, 8)), tmp_path / "spectrum" / "ep=0.png")
        with atomic_output(tmp_path / "plain.txt") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(previous)
    for path in (tmp_path / "spectrum" / "ep=0.png", tmp_path / "plain.txt"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
