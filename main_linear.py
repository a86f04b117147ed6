"""Evaluate a pretrained backbone offline: linear probe, partial or full fine-tuning.

python main_linear.py --config-name linear.yaml pretrained_feature_extractor=trained_models/mae/<run id>
python main_linear.py --config-name finetune.yaml pretrained_feature_extractor=<run folder or .ckpt>
python main_linear.py --config-path scripts/linear/cifar --config-name mae.yaml \
    pretrained_feature_extractor=<run folder or .ckpt>
python main_linear.py --config-name linear.yaml ++allow_random_backbone=True    # random-backbone baseline

A run folder stands for its newest checkpoint; the backbone is read from its args.json. A
checkpoint file name holds an "=", which Hydra wants quoted: 'pretrained_feature_extractor="<file>"'.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.2", config_path="scripts/linear/digits", config_name=None)
def main(cfg: DictConfig) -> None:
    if not cfg:
        sys.exit("error: no config chosen; pass --config-name (e.g. --config-name linear.yaml)")
    from solo_ext.run.exits import exit_on_user_error
    from solo_ext.run.linear import run_linear

    with exit_on_user_error():
        run_linear(cfg)


if __name__ == "__main__":
    from solo_ext.run.hydra_check import check_composition

    here = Path(__file__).resolve().parent
    check_composition(sys.argv[1:], here / "scripts" / "linear" / "digits", here)
    main()
