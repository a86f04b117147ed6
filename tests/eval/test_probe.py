"""The offline probe (solo_ext/eval/probe.py, solo_ext/run/probe.py): a grid of heads trained
together equals each head trained alone, the setting is chosen without val, and on digits the
probe's accuracy lies within 2 points of scikit-learn's logistic regression on the same features."""

import json

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from solo_ext.config.errors import ConfigError
from solo_ext.config.linear import parse_cfg
from solo_ext.config.paths import saved_run_args
from solo_ext.data import prepare_classification_datasets, prepare_dataloader, prepare_transforms
from solo_ext.eval.diagnostics import effective_rank
from solo_ext.eval.probe import (
    HeadSetting,
    curve_epochs,
    head_accuracies,
    head_grid,
    holdout_split,
    probe,
    train_heads,
)
from solo_ext.run.knn_eval import backbone_for, extract_features
from solo_ext.run.linear import run_linear
from tests.methods.test_linear_model import save_tiny_pretrained

GRID = {"lrs": [0.01, 0.1, 1.0], "weight_decays": [0.0, 1e-3], "batchnorm": [True, False]}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return save_tiny_pretrained(tmp_path_factory.mktemp("pretrain"))


def probe_cfg(pretrained, tmp_path, features, **probe_keys):
    return {
        "name": "tiny-probe",
        "pretrained_feature_extractor": str(pretrained),
        "mode": "probe",
        "features": features,
        "data": {"dataset": "digits", "num_workers": 0},
        "probe": {**GRID, "epochs": 60, **probe_keys},
        "checkpoint": {"dir": str(tmp_path / "out")},
        "accelerator": "cpu",
    }


def clean_features(checkpoint, kind):
    """The checkpoint's (train, val) features of ``kind`` through the val transform, extracted
    here, apart from the probe's runner."""
    backbone = backbone_for(checkpoint, saved_run_args(checkpoint))
    _, transform = prepare_transforms("digits", backbone.img_size)
    sets = prepare_classification_datasets("digits", transform, transform)
    return [
        tuple(
            t[kind] if isinstance(t, dict) else t
            for t in extract_features(
                backbone,
                prepare_dataloader(ds, 256, 0, shuffle=False, drop_last=False),
                [kind],
                torch.device("cpu"),
            )
        )
        for ds in sets
    ]


@pytest.mark.parametrize("features", ["cls", "mean"])
def test_probe_is_within_2_points_of_scikit_learn_logistic_regression(pretrained, tmp_path, features, capsys):
    results = run_linear(parse_cfg(probe_cfg(pretrained, tmp_path, features, random_baseline=False)))
    probe_acc = results["metrics"]["val_acc1"]["final"]

    (train_x, train_y), (val_x, val_y) = clean_features(pretrained, features)
    scaler = StandardScaler().fit(train_x.numpy())
    reference = LogisticRegression(max_iter=5000).fit(scaler.transform(train_x.numpy()), train_y.numpy())
    sklearn_acc = 100 * float((reference.predict(scaler.transform(val_x.numpy())) == val_y.numpy()).mean())

    assert abs(probe_acc - sklearn_acc) <= 2.0, (features, probe_acc, sklearn_acc)
    # the chosen setting is reported beside the accuracy, printed and in results.json
    chosen = results["probe"]["chosen"]
    assert {"lr", "weight_decay", "batchnorm", "holdout_acc1"} <= set(chosen)
    assert f"probe val_acc1 {probe_acc:.2f}" in capsys.readouterr().out
    assert f"frozen {features} features" in results["metrics"]["val_acc1"]["protocol"]
    # the effective rank of the val features probed, the same number as from features read apart
    rank = results["metrics"]["val_effective_rank"]["final"]
    assert rank == pytest.approx(effective_rank(val_x), rel=1e-4)


def test_grid_heads_train_as_if_alone():
    """One batched model of H heads reaches, head by head, what each setting reaches on its own:
    no head's loss or lr leaks into another's."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(90, 6, generator=generator) * 3 + 1
    y = torch.randint(0, 3, (90,), generator=generator)
    settings = head_grid([0.05, 0.5], [0.0, 0.01], [True, False])
    options = {"epochs": 4, "batch_size": 32, "momentum": 0.9, "seed": 1}
    together = train_heads(x, y, settings, 3, **options)
    for h, setting in enumerate(settings):
        alone = train_heads(x, y, [setting], 3, **options)
        torch.testing.assert_close(together.weight[h], alone.weight[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(together.bias[h], alone.bias[0], rtol=1e-4, atol=1e-5)


def test_batchnorm_heads_read_standardised_features():
    x = torch.tensor([[1.0, 100.0], [3.0, 300.0], [5.0, 500.0]])
    grid = train_heads(
        x,
        torch.tensor([0, 1, 1]),
        head_grid([0.1], [0.0], [True, False]),
        2,
        epochs=1,
        batch_size=3,
        momentum=0.0,
        seed=0,
    )
    inputs = grid.inputs(x)
    torch.testing.assert_close(inputs[0].mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(inputs[0].var(0, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(inputs[1], x)


def test_holdout_is_stratified_disjoint_and_seeded():
    y = torch.tensor([0] * 10 + [1] * 5 + [2])
    fit, held = holdout_split(y, 0.2, seed=3)
    assert sorted(fit.tolist() + held.tolist()) == list(range(16))
    assert torch.bincount(y[held], minlength=3).tolist() == [2, 1, 0]
    assert torch.equal(held, holdout_split(y, 0.2, seed=3)[1])


def test_the_setting_is_chosen_without_val():
    """Val labels scrambled: the same setting is chosen (only the refit head's val score moves)."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=generator) * 2
    y = torch.randint(0, 4, (200,), generator=generator)
    x = centres[y] + torch.randn(200, 8, generator=generator)
    val_y = torch.randint(0, 4, (80,), generator=generator)
    val_x = centres[val_y] + torch.randn(80, 8, generator=generator)
    settings = head_grid([0.001, 0.1], [0.0, 0.1], [True, False])
    options = {"holdout_fraction": 0.25, "epochs": 5, "batch_size": 32, "momentum": 0.9, "seed": 0}
    honest = probe((x, y), (val_x, val_y), settings, 4, **options)
    scrambled = probe((x, y), (val_x, val_y[torch.randperm(80, generator=generator)]), settings, 4, **options)
    assert honest.chosen == scrambled.chosen and honest.holdout_acc1 == scrambled.holdout_acc1
    assert honest.val_acc1 > 90 > scrambled.val_acc1
    assert honest.chosen == settings[max(range(len(settings)), key=lambda i: honest.holdout_acc1[i])]
    assert isinstance(honest.chosen, HeadSetting)


def test_curve_is_the_chosen_heads_holdout_accuracy_by_epoch():
    """The curve's readings are the chosen head's held-out accuracy after those epochs of the
    grid's fit, as a recorder of every epoch of the same fit sees them; the last is the accuracy
    the setting was chosen by."""
    assert curve_epochs(200) == [1, 2, 5, 10, 20, 50, 100, 200]
    assert curve_epochs(7) == [1, 2, 5, 7] and curve_epochs(1) == [1]
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, generator=generator) * 2
    y = torch.randint(0, 3, (120,), generator=generator)
    x = centres[y] + torch.randn(120, 5, generator=generator)
    settings = head_grid([0.001, 0.3], [0.0], [False])
    options = {"epochs": 12, "batch_size": 32, "momentum": 0.9, "seed": 2}
    outcome = probe((x, y), (x[:10], y[:10]), settings, 3, holdout_fraction=0.25, **options)
    assert [epoch for epoch, _ in outcome.curve] == [1, 2, 5, 10, 12]
    assert outcome.curve[-1][1] == max(outcome.holdout_acc1)

    fit, held = holdout_split(y, 0.25, seed=2)
    seen = {}
    train_heads(
        x[fit],
        y[fit],
        settings,
        3,
        after_epoch=lambda e, g: seen.setdefault(e, head_accuracies(g, x[held], y[held])),
        **options,
    )
    best = settings.index(outcome.chosen)
    assert outcome.curve == [(e, float(seen[e][best])) for e in (1, 2, 5, 10, 12)]


def test_random_baseline_and_files_of_a_probe_run(pretrained, tmp_path):
    results = run_linear(parse_cfg(probe_cfg(pretrained, tmp_path, "mean", epochs=5)))
    run_dir = tmp_path / "out" / "linear" / results["run_dir"].rsplit("/", 1)[-1]
    assert sorted(p.name for p in run_dir.iterdir() if p.is_file()) == [
        "args.json",
        "probe_head.pt",
        "results.json",
    ]
    stored = json.loads((run_dir / "results.json").read_text())
    assert stored["random_backbone"]["val_acc1"] > 0 and len(stored["random_backbone"]["grid"]) == 12
    assert len(stored["probe"]["grid"]) == 12
    assert [point["epoch"] for point in stored["probe"]["curve"]] == [1, 2, 5]
    args = json.loads((run_dir / "args.json").read_text())
    assert args["mode"] == "probe" and args["derived"]["protocols"]["linear"].startswith(
        "probe on frozen mean"
    )


def test_augmented_views_follow_the_run_and_need_its_augmentations(pretrained, tmp_path):
    from solo_ext.run.linear import load_backbone
    from solo_ext.run.probe import feature_sets, pretraining_augmentation

    cfg = parse_cfg(
        probe_cfg(
            pretrained, tmp_path, "cls", epochs=2, train_views="augmented", num_views=2, random_baseline=False
        )
    )
    augmentation = pretraining_augmentation(cfg)
    (train_x, _), _, views = feature_sets(cfg, load_backbone(cfg), augmentation, torch.device("cpu"))
    assert views.shape == (2, *train_x.shape)
    # the tiny run pretrained on random resized crops: each pass draws other crops of each image
    assert not torch.allclose(views[0], views[1]) and not torch.allclose(views[0], train_x)
    results = run_linear(cfg)
    assert "2 view(s) of the training images" in results["metrics"]["val_acc1"]["protocol"]

    (pretrained.parent / "args.json").rename(tmp_path / "args.json")
    try:
        with pytest.raises(ConfigError, match=r"^probe.train_views='augmented': needs the pretraining run's"):
            pretraining_augmentation(cfg)
    finally:
        (tmp_path / "args.json").rename(pretrained.parent / "args.json")
