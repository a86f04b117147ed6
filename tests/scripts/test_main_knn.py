"""main_knn.py: one table row per (feature type, distance, k, T), the same table as CSV beside the
checkpoint, and one-line errors with exit code 2."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main_knn
from tests.methods.test_linear_model import save_tiny_pretrained

MAIN = Path(__file__).resolve().parents[2] / "main_knn.py"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return save_tiny_pretrained(tmp_path_factory.mktemp("pretrain"))


def test_prints_one_row_per_combination_and_writes_the_csv(pretrained):
    args = [
        "--pretrained_checkpoint_dir",
        str(pretrained.parent),
        "--data_fraction",
        "0.3",
        "--num_workers",
        "0",
    ]
    args += ["--k", "1", "10", "--temperature", "0.05", "0.2", "--distance_function", "cosine", "euclidean"]
    args += ["--feature_type", "cls", "mean", "--batch_size", "128"]
    result = subprocess.run([sys.executable, str(MAIN), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["feature_type", "distance", "k", "T", "bank", "acc1", "acc5"]
    table = [line.split() for line in lines[1:-2]]
    assert len(table) == 2 * 2 * 2 * 2
    assert {tuple(row[:4]) for row in table} == {
        (f, d, k, t)
        for f in ("cls", "mean")
        for d in ("cosine", "euclidean")
        for k in ("1", "10")
        for t in ("0.05", "0.2")
    }
    csv_path = pretrained.with_name(f"{pretrained.stem}-knn-digits.csv")
    assert lines[-2] == f"written to {csv_path}"
    results = pretrained.parent / "results.json"
    assert lines[-1] == f"results: {results}"
    assert len(json.loads(results.read_text())["offline_knn"]["rows"]) == 16
    rows = list(csv.DictReader(open(csv_path)))
    assert [(r["feature_type"], r["distance"], r["k"]) for r in rows] == [tuple(row[:3]) for row in table]
    for row in rows:
        # labels aligned with features: far above the 10% of chance, even for an untrained MAE
        assert 25 < float(row["acc1"]) <= float(row["acc5"]) <= 100
    euclidean = [(r["feature_type"], r["k"], r["acc1"]) for r in rows if r["distance"] == "euclidean"]
    assert len(set(euclidean)) == len(euclidean) // 2  # T plays no part in the euclidean vote


def run_in_process(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main_knn.main(list(args))
    return info.value.code, capsys.readouterr().err


def test_errors_exit_2_with_one_message(pretrained, tmp_path, capsys):
    code, err = run_in_process(capsys, "--checkpoint", str(tmp_path / "nothing.ckpt"))
    expected = f"error: --checkpoint='{tmp_path / 'nothing.ckpt'}': no such checkpoint file or folder"
    assert code == 2 and err.strip() == expected

    code, err = run_in_process(capsys, "--pretrained_checkpoint_dir", str(tmp_path))
    assert code == 2 and "a folder without checkpoints (<name>-<run id>-ep=<E>.ckpt)" in err

    code, err = run_in_process(capsys, "--pretrained_checkpoint_dir", str(pretrained.parent), "--k", "0")
    assert code == 2 and err.strip() == "error: --k[0]=0: must be an integer >= 1"

    ckpt = torch.load(pretrained, weights_only=True)
    ckpt["state_dict"]["backbone.extra"] = torch.zeros(1)
    broken = tmp_path / "broken.ckpt"
    torch.save(ckpt, broken)
    code, err = run_in_process(
        capsys,
        *("--checkpoint", str(broken), "--dataset", "digits"),
        *("--backbone", "vit_tiny", "--backbone_kwargs", '{"depth": 2}'),
    )
    assert code == 2 and "1 unexpected: extra" in err

    # a checkpoint with no args.json beside it: the dataset and the backbone must be named
    code, err = run_in_process(capsys, "--checkpoint", str(broken), "--backbone", "vit_tiny")
    assert code == 2 and err.strip().startswith("error: --dataset=None: must be one of cifar10,")
    code, err = run_in_process(capsys, "--checkpoint", str(broken), "--dataset", "digits")
    assert code == 2 and err.strip().startswith("error: --backbone=None: must be one of vit_tiny,")
    code, err = run_in_process(
        capsys,
        *("--checkpoint", str(broken), "--dataset", "digits"),
        *("--backbone", "vit_tiny", "--backbone_kwargs", '{"depht": 2}'),
    )
    assert code == 2 and err.strip().endswith("did you mean 'depth'?") and "--backbone_kwargs.depht=2" in err


def test_defaults_follow_the_run(tmp_path):
    # a run whose online probe read mean features and whose online kNN was k 5, euclidean:
    # main_knn.py without those flags measures the same protocol
    from solo_ext.run.knn_eval import run_knn

    ckpt = save_tiny_pretrained(tmp_path)
    args_path = ckpt.parent / "args.json"
    args = json.loads(args_path.read_text())
    args["method_kwargs"]["online_features"] = "mean"
    args["knn_eval"].update(k=5, T=0.2, distance_func="euclidean")
    args_path.write_text(json.dumps(args))
    rows, _ = run_knn(pretrained_checkpoint_dir=str(ckpt.parent), data_fraction=0.3, num_workers=0)
    assert [(r["feature_type"], r["k"], r["T"], r["distance"], r["bank"]) for r in rows] == [
        ("mean", 5, 0.2, "euclidean", "clean")
    ]
    rows, _ = run_knn(checkpoint=str(ckpt), data_fraction=0.3, num_workers=0, feature_type=["cls"], k=[3])
    assert [(r["feature_type"], r["k"]) for r in rows] == [("cls", 3)]


def test_an_unreadable_results_json_is_left_as_it_is_with_a_warning(tmp_path, capsys):
    ckpt = save_tiny_pretrained(tmp_path)
    results = ckpt.parent / "results.json"
    results.write_text('{"metrics": {"val_acc1": {"fin')  # a write cut short
    main_knn.main(["--checkpoint", str(ckpt), "--data_fraction", "0.3", "--num_workers", "0", "--k", "5"])
    out, err = capsys.readouterr()
    csv_path = ckpt.with_name(f"{ckpt.stem}-knn-digits.csv")
    assert out.strip().splitlines()[-1] == f"written to {csv_path}" and csv_path.is_file()
    assert err.strip().splitlines() == [
        f"WARNING: {results} is not valid JSON (Unterminated string starting at: line 1 column 27 "
        "(char 26)); left as it is, offline_knn not added"
    ]
    assert results.read_text() == '{"metrics": {"val_acc1": {"fin'
