"""What every export folder holds besides the weights: a model card in the hub's format with the
run's recipe and results, and files a user (and ``hf upload``) can read; nothing of the user's is
touched on the way. The weights themselves are checked against timm and transformers in
tests/backbones/test_interop.py."""

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from omegaconf import OmegaConf

from solo_ext.config.linear import parse_cfg as parse_linear
from solo_ext.export import export
from solo_ext.run.pretrain import run_pretrain
from tests.methods.test_linear_model import save_tiny_pretrained, tiny_linear_cfg
from tests.methods.tiny import ALL_REGULARIZERS, tiny_cfg


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A real two-step mae-reg run with all three regularizers, its results.json included."""
    root = tmp_path_factory.mktemp("card")
    cfg = tiny_cfg(
        root,
        method_kwargs={"regularizers": ALL_REGULARIZERS},
        limit_train_batches=2,
        limit_val_batches=1,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        run_pretrain(OmegaConf.create(cfg))
    (run,) = (root / "trained_models" / "mae-reg").iterdir()
    return run


@pytest.mark.parametrize("to, library", [("timm", "timm"), ("hf", "transformers"), ("mae", "pytorch")])
def test_model_card_says_what_was_trained_and_reached(trained_run, tmp_path, to, library):
    out = export(trained_run, to, tmp_path / to, license_id="cc-by-nc-4.0")
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == library and card.data.license == "cc-by-nc-4.0"
    assert card.data.datasets == ["digits"] and card.data.pipeline_tag == "image-feature-extraction"
    assert {"solo-ext", "uniformity", "tcr", "magma"} <= set(card.data.tags)
    args = json.loads((trained_run / "args.json").read_text())
    text = card.text
    assert hashlib.sha256((trained_run / "args.json").read_bytes()).hexdigest() in text
    assert "`vit_tiny`" in text and "mask ratio 0.75" in text and "| dataset | `digits` |" in text
    for name, spec in ALL_REGULARIZERS.items():
        weight = args["derived"]["regularizers"][name]["effective_weight"]
        assert weight == spec["weight"]
        assert f"| regularizer {name} | weight {weight}, schedule constant(" in text
    metrics = json.loads((trained_run / "results.json").read_text())["metrics"]
    for name in ("val_acc1", "val_knn_acc1"):
        m = metrics[name]
        row = f"| {name} | {m['final']:.4g} | {m['best']:.4g} ({m['best_epoch']:g}) | {m['protocol']} |"
        assert row in text
    assert "epochs | 1 of 1" in text and "hf upload ORG/NAME DIR" in text
    assert {"timm": "local-dir:DIR", "hf": "image-feature-extraction", "mae": "checkpoint.pth"}[to] in text


def test_timm_folder_reads_back_in_solo_ext(trained_run, tmp_path):
    out = export(trained_run, "timm", tmp_path / "timm")
    cfg = parse_linear(tiny_linear_cfg(str(out), tmp_path))
    assert cfg.pretrained_feature_extractor == str(out / "model.safetensors")
    assert cfg.backbone.kwargs.embed_dim == 32 and cfg.backbone.kwargs.depth == 2


@pytest.mark.parametrize("umask, to", [(0o022, "timm"), (0o027, "mae")])
def test_export_keeps_the_users_tmp_and_gives_usual_modes(tmp_path, umask, to):
    run_dir = save_tiny_pretrained(tmp_path / "run").parent
    theirs = tmp_path / "out.tmp"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("the user's")
    old = os.umask(umask)
    try:
        out = export(run_dir, to, tmp_path / "out")
    finally:
        os.umask(old)
    assert (theirs / "notes.txt").read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.tmp", "run"]  # no temp left
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.iterdir()]}
    assert modes.pop("out") == 0o777 & ~umask
    assert "model.safetensors" in modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_an_unreadable_args_json_is_one_line_and_nothing_is_written(trained_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (ckpt,) = trained_run.glob("*.ckpt")
    (run / ckpt.name).symlink_to(ckpt)
    (run / "args.json").write_text('{"backbone": ')
    from solo_ext.export import ExportError

    with pytest.raises(ExportError) as info:
        export(run, "timm", tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message
    assert (
        message.startswith(f"{run / 'args.json'} is not valid JSON (")
        and "architecture is unknown" in message
    )
    assert not (tmp_path / "out").exists()
