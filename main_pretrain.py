"""Pretrain an MAE, with or without regularizers, from a solo-learn-style Hydra YAML.

python main_pretrain.py --config-name mae-reg-uniformity.yaml          # offline demo (digits)
python main_pretrain.py --config-path scripts/pretrain/cifar --config-name mae.yaml [key=value ...]
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.2", config_path="scripts/pretrain/digits", config_name=None)
def main(cfg: DictConfig) -> None:
    if not cfg:
        sys.exit("error: no config chosen; pass --config-name (e.g. --config-name mae-reg-uniformity.yaml)")
    from solo_ext.run.exits import exit_on_user_error
    from solo_ext.run.pretrain import run_pretrain

    with exit_on_user_error():
        run_pretrain(cfg)


if __name__ == "__main__":
    from solo_ext.run.hydra_check import check_composition

    here = Path(__file__).resolve().parent
    check_composition(sys.argv[1:], here / "scripts" / "pretrain" / "digits", here)
    main()
