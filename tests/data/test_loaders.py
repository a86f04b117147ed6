import importlib.util
import socket
import threading

import pytest
from torchvision.datasets import CIFAR10

from solo_ext.config.errors import ConfigError, validate
from solo_ext.config.schema import Data
from solo_ext.data import prepare_classification_datasets, prepare_pretrain_dataset
from solo_ext.data.dali import INSTALL_HINT
from solo_ext.data.downloads import TORCHVISION_DATASETS, _remove_leftovers, torchvision_dataset
from solo_ext.utils.errors import DataError


@pytest.mark.parametrize("data_format", ["image_folder", "ram_image_folder"])
def test_plain_formats_pass_through(data_format):
    assert validate(Data, {"dataset": "custom", "format": data_format}, "data").format == data_format


def test_unknown_format_lists_the_allowed():
    with pytest.raises(
        ConfigError, match=r"^data.format='h5': must be one of image_folder, ram_image_folder, dali$"
    ):
        validate(Data, {"dataset": "custom", "format": "h5"}, "data")


def test_dali_without_the_extra_names_the_install_command(monkeypatch):
    # find_spec answering None is what a venv without nvidia-dali-cuda120 gives
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError) as info:
        validate(Data, {"dataset": "custom", "format": "dali"}, "data")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("data.format='dali': NVIDIA DALI is not installed here; ")
    assert INSTALL_HINT in message and "nvidia-dali-cuda120" in message


@pytest.mark.dali  # run by .ci/run's DALI phase; skipped (or failed, SOLO_EXT_REQUIRE_DALI=1) without it
def test_dali_with_the_extra_is_accepted_without_a_gpu():
    assert validate(Data, {"dataset": "custom", "format": "dali"}, "data").format == "dali"


@pytest.mark.dali  # run by .ci/run's DALI phase; skipped (or failed, SOLO_EXT_REQUIRE_DALI=1) without it
def test_dali_reads_image_folders_only():
    with pytest.raises(ConfigError, match=r"^data.format='dali': reads image folders"):
        validate(Data, {"dataset": "cifar10", "format": "dali"}, "data")


def run_bounded(fn, seconds):
    """Run ``fn`` in a thread; fail the test if it has not returned within ``seconds``."""
    outcome = {}

    def target():
        try:
            fn()
        except BaseException as exc:  # noqa: B036 - handed back to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return outcome.get("error")


def test_cifar_download_without_network_fails_fast_and_leaves_nothing(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    timeout_before = socket.getdefaulttimeout()
    error = run_bounded(lambda: prepare_pretrain_dataset("cifar10", None, train_path=str(root)), 90)
    assert isinstance(error, DataError), repr(error)
    assert str(error) == (
        f"could not download cifar10 into '{root}' (no network?): "
        "place the dataset there or set data.train_path"
    )
    assert list(root.iterdir()) == []
    assert socket.getdefaulttimeout() == timeout_before
    # A root the download itself created is removed again.
    missing = tmp_path / "new" / "root"
    error = run_bounded(
        lambda: prepare_classification_datasets("cifar100", None, None, str(missing), str(missing)), 90
    )
    assert isinstance(error, DataError) and "could not download cifar100" in str(error)
    assert not missing.exists()


def test_cifar_missing_with_download_off(tmp_path):
    with pytest.raises(DataError, match=r"cifar10 is not in '.*' \(or is corrupted\) and downloading is off"):
        prepare_pretrain_dataset("cifar10", None, train_path=str(tmp_path), download=False)
    assert list(tmp_path.iterdir()) == []


def test_partial_download_leftovers_are_removed(tmp_path):
    (tmp_path / CIFAR10.filename).write_bytes(b"first 10 bytes")
    (tmp_path / CIFAR10.base_folder).mkdir()
    (tmp_path / CIFAR10.base_folder / "data_batch_1").write_bytes(b"partial")
    (tmp_path / "unrelated.txt").write_text("keep me")
    _remove_leftovers(CIFAR10, tmp_path, {"extracted": False}, root_existed=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.txt"]


def test_previously_extracted_folder_is_kept(tmp_path):
    (tmp_path / CIFAR10.base_folder).mkdir()
    (tmp_path / CIFAR10.base_folder / "readme.html").write_text("from an earlier, complete run")
    _remove_leftovers(CIFAR10, tmp_path, {"extracted": True}, root_existed=True)
    assert (tmp_path / CIFAR10.base_folder / "readme.html").exists()


def test_interrupted_download_cleans_up_and_propagates(tmp_path, monkeypatch):
    class Interrupted(CIFAR10):
        def __init__(self, root, download=False, **kwargs):
            if not download:
                raise RuntimeError("Dataset not found or corrupted.")
            (tmp_path / CIFAR10.filename).write_bytes(b"the first bytes")
            raise KeyboardInterrupt

    monkeypatch.setitem(TORCHVISION_DATASETS, "cifar10", Interrupted)
    timeout_before = socket.getdefaulttimeout()
    with pytest.raises(KeyboardInterrupt):
        torchvision_dataset("cifar10", str(tmp_path), "train", None, download=True)
    assert list(tmp_path.iterdir()) == [] and socket.getdefaulttimeout() == timeout_before


def test_a_split_the_dataset_does_not_have(tmp_path):
    with pytest.raises(KeyError, match="'val'"):
        torchvision_dataset("cifar10", str(tmp_path), "val", None, download=False)
