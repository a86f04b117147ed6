"""A bad image read by a DataLoader worker process is one line naming the file, as it is without
workers: corrupt bytes, a decompression bomb (beyond PIL's ``MAX_IMAGE_PIXELS``, left as it is),
a file that cannot be read (a link to nothing)."""

from __future__ import annotations

import pytest
from tiny_images import FAULTS, SAYS, add_fault

from solo_ext.data import prepare_dataloader
from solo_ext.data.folders import class_folder_dataset
from solo_ext.run.exits import exit_on_user_error


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("decode", ["tensor", "pil"])
def test_a_bad_image_in_a_worker_is_one_line_naming_it(image_folder, capsys, fault, decode):
    bad = add_fault(image_folder / "bee", fault)
    ds = class_folder_dataset(image_folder, "data.train_path", "custom")
    ds.decode = decode
    loader = prepare_dataloader(ds, batch_size=len(ds), num_workers=1, shuffle=False, drop_last=False)
    with pytest.raises(SystemExit) as exit_, exit_on_user_error():
        next(iter(loader))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot decode image '{bad}': ") and err.count("\n") == 1, err
    assert SAYS[fault] in err
