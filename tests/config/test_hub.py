"""``hf-hub:ORG/NAME`` for ``method_kwargs.init_from`` and ``pretrained_feature_extractor``, offline:
a cache folder in huggingface_hub's snapshot layout, holding our timm and Hugging Face exports,
gives the same weights as the export folders themselves; what cannot be found is one line."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf

from solo_ext.backbones.interop import backbone_from_timm_config
from solo_ext.config.errors import ConfigError
from solo_ext.config.linear import parse_cfg as parse_linear
from solo_ext.config.pretrain import parse_cfg as parse_pretrain
from solo_ext.export import export
from solo_ext.methods import METHODS
from solo_ext.run.linear import load_backbone
from solo_ext.utils.runfolder import epoch_checkpoints as checkpoints_in
from tests.methods.test_linear_model import save_tiny_pretrained, tiny_linear_cfg
from tests.methods.tiny import tiny_cfg

ROOT = Path(__file__).resolve().parents[2]


def put_in_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """``folder``'s files as huggingface_hub caches a download of ``repo_id``: ``refs/main`` names
    a commit, ``snapshots/<commit>/<file>`` links to ``blobs/<hash>``. Returns the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for path in folder.iterdir():
        data = path.read_bytes()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", blob))
    return snapshot


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_tiny_pretrained(tmp_path_factory.mktemp("hub")).parent


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def mae(tmp_path: Path, init_from: str):
    cfg = parse_pretrain(tiny_cfg(tmp_path, method="mae", method_kwargs={"init_from": init_from}))
    return cfg, METHODS["mae"](cfg)


def assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name, tensor in a.items():
        torch.testing.assert_close(tensor, b[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("layout", ["timm", "hf"])
def test_hub_names_load_what_the_folder_holds(run_dir, tmp_path, offline_cache, layout):
    folder = export(run_dir, layout, tmp_path / layout)
    snapshot = put_in_cache(offline_cache, "solo-ext/tiny-mae", folder)
    trained = torch.load(checkpoints_in(run_dir)[-1], weights_only=True)["state_dict"]
    trained_backbone = {k[len("backbone.") :]: v for k, v in trained.items() if k.startswith("backbone.")}

    # continue pretraining: init_from
    cfg, from_hub = mae(tmp_path, "hf-hub:solo-ext/tiny-mae")
    assert cfg.method_kwargs.init_from == str(snapshot.resolve() / "model.safetensors")
    _, from_folder = mae(tmp_path, str(folder))
    assert_same(from_hub.backbone.state_dict(), from_folder.backbone.state_dict())
    assert_same(from_hub.backbone.state_dict(), trained_backbone)
    if layout == "hf":  # the timm layout holds the encoder alone
        assert_same(from_hub.decoder.state_dict(), from_folder.decoder.state_dict())
        trained_decoder = {k[len("decoder.") :]: v for k, v in trained.items() if k.startswith("decoder.")}
        assert_same(from_hub.decoder.state_dict(), trained_decoder)

    # linear evaluation: pretrained_feature_extractor, the backbone read from the repository's files
    linear_hub = parse_linear(tiny_linear_cfg("hf-hub:solo-ext/tiny-mae", tmp_path))
    linear_folder = parse_linear(tiny_linear_cfg(str(folder), tmp_path))
    assert linear_hub.backbone == linear_folder.backbone
    assert linear_hub.backbone.kwargs.embed_dim == 32 and linear_hub.backbone.kwargs.depth == 2
    assert_same(load_backbone(linear_hub).state_dict(), load_backbone(linear_folder).state_dict())
    assert_same(load_backbone(linear_hub).state_dict(), trained_backbone)


def test_a_timm_repository_of_others_gives_its_backbone_and_weights(tmp_path, offline_cache):
    """A folder timm itself wrote (timm.models.save_for_hf: config.json with the architecture and
    its arguments, model.safetensors; no export.json of ours), as a hub repository."""
    torch.manual_seed(2)
    sizes = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **sizes)
    save_for_hf(model, str(tmp_path / "timm-made"), safe_serialization=True)
    put_in_cache(offline_cache, "someone/vit-tiny-32", tmp_path / "timm-made")
    theirs = model.state_dict()

    linear = parse_linear(tiny_linear_cfg("hf-hub:someone/vit-tiny-32", tmp_path))
    assert linear.backbone.name == "vit_base" and {**linear.backbone.kwargs} == {**sizes, "mlp_ratio": 4.0}
    assert_same(load_backbone(linear).state_dict(), theirs)
    _, pretrain = mae(tmp_path, "hf-hub:someone/vit-tiny-32")
    assert_same(pretrain.backbone.state_dict(), theirs)
    # the hub's own timm repositories name the architecture alone: timm's sizes of it
    assert backbone_from_timm_config({"architecture": "vit_tiny_patch16_224"})["kwargs"] == {
        "img_size": 224,
        "patch_size": 16,
        "embed_dim": 192,
        "depth": 12,
        "num_heads": 3,
        "mlp_ratio": 4.0,
    }
    assert backbone_from_timm_config({"architecture": "resnet18"}) is None
    assert backbone_from_timm_config({"architecture": "no_such_model"}) is None


def test_what_the_hub_cannot_give_is_one_line(run_dir, tmp_path, offline_cache):
    cfg = tiny_linear_cfg("hf-hub:solo-ext/nowhere", tmp_path)
    with pytest.raises(ConfigError) as caught:
        parse_linear(cfg)
    assert str(caught.value) == (
        f"pretrained_feature_extractor='hf-hub:solo-ext/nowhere': not (wholly) in the Hugging Face cache "
        f"{offline_cache} and HF_HUB_OFFLINE is set; download it with network access "
        "(hf download solo-ext/nowhere) or give a local folder or checkpoint instead"
    )
    with pytest.raises(
        ConfigError, match=r"^method_kwargs.init_from='hf-hub:a/b/c': must be hf-hub:ORG/NAME"
    ):
        mae(tmp_path, "hf-hub:a/b/c")
    card_only = tmp_path / "card-only"
    card_only.mkdir()
    (card_only / "config.json").write_text("{}")
    put_in_cache(offline_cache, "solo-ext/card-only", card_only)
    with pytest.raises(
        ConfigError, match=r"'hf-hub:solo-ext/card-only': the repository has no model.safetensors"
    ):
        mae(tmp_path, "hf-hub:solo-ext/card-only")

    # the entry point: one line, exit code 2, nothing written
    result = subprocess.run(
        [
            sys.executable,
            "main_pretrain.py",
            "--config-name",
            "mae.yaml",
            "++method_kwargs.init_from=hf-hub:solo-ext/nowhere",
            f"checkpoint.dir={tmp_path / 'runs'}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "method_kwargs.init_from='hf-hub:solo-ext/nowhere': not (wholly) in the Hugging Face cache" in (
        result.stderr
    )
    assert "HF_HUB_OFFLINE is set" in result.stderr and not (tmp_path / "runs").exists()
