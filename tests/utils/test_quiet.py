"""What a newcomer sees: no library tips or deprecation noise we can configure away."""

import warnings

from omegaconf import OmegaConf

from solo_ext.run.pretrain import run_pretrain
from tests.methods.tiny import tiny_cfg


def test_a_run_prints_no_library_noise(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "false")
    cfg = tiny_cfg(tmp_path, method="mae", wandb={"enabled": True, "offline": True, "project": "quiet"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        run_pretrain(OmegaConf.create(cfg))
    out, err = capfd.readouterr()
    text = out + err + "\n".join(str(w.message) for w in caught)
    assert "== results of tiny" in out  # the run did print
    for noise in ("litlogger", "anonymous setting", "LeafSpec"):
        assert noise not in text, noise
