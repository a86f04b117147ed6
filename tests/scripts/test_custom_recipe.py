"""The custom-data recipe without class folders: a flat folder of JPEGs (one nested sub-folder
too), ``data.no_labels=True``, no validation. tests/scripts/test_recipes.py runs the same recipe on
class folders; this reuses its two-step run and checks."""

import json

import tests.scripts.test_recipes as recipes

RECIPE = recipes.SHIPPED / "custom" / "mae-reg-uniformity.yaml"


def test_custom_recipe_trains_on_a_flat_folder_of_jpegs(tmp_path):
    flat = tmp_path / "my-images"
    for i in range(8):
        recipes.write_image(flat / ("more" if i % 2 else "") / f"{i}.jpg", seed=i)
    unlabelled = [f"data.train_path='{flat}'", "data.val_path=null", "data.no_labels=True"]
    recipes.test_recipe_trains_two_steps(RECIPE, unlabelled, tmp_path, one_thread=None)
    (run_dir,) = (tmp_path / "trained_models" / "mae-reg").iterdir()
    args = json.loads((run_dir / "args.json").read_text())
    assert args["data"]["train_path"] == str(flat) and args["data"]["num_classes"] is None
