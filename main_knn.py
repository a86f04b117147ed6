"""Offline weighted kNN evaluation of a pretrained backbone (solo-learn's main_knn.py flags).

python main_knn.py --pretrained_checkpoint_dir trained_models/mae/<run id> \
    --k 10 20 50 --temperature 0.02 0.07 0.2 --distance_function cosine euclidean --feature_type cls mean

Dataset, paths and backbone default to those of the run's args.json. Prints one row per
combination and writes the table as CSV beside the checkpoint.
"""

import argparse
import json
import sys

from solo_ext.utils.errors import ConfigError, DataError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pretrained_checkpoint_dir", help="a run folder (args.json and checkpoints)")
    source.add_argument("--checkpoint", help="a checkpoint file (.ckpt, .pth or .pt)")
    parser.add_argument("--backbone", help="backbone name, when no args.json is beside the checkpoint")
    parser.add_argument(
        "--backbone_kwargs",
        type=json.loads,
        default=None,
        help="backbone kwargs as JSON, e.g. '{\"img_size\": 32}'",
    )
    parser.add_argument("--dataset", help="default: the run's")
    parser.add_argument("--train_data_path")
    parser.add_argument("--val_data_path")
    parser.add_argument("--data_format", default="image_folder")
    parser.add_argument("--data_fraction", type=float, default=-1.0)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_workers", type=int, default=4)
    parser.add_argument("--k", type=int, nargs="+", default=[20])
    parser.add_argument("--temperature", type=float, nargs="+", default=[0.07])
    parser.add_argument("--distance_function", nargs="+", default=["cosine"])
    parser.add_argument("--feature_type", nargs="+", default=["cls"], help="cls and/or mean")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from solo_ext.knn_eval import format_table, run_knn
    from solo_ext.utils.checkpoint_loading import CheckpointError

    try:
        rows, path = run_knn(**vars(args))
    except (ConfigError, DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_table(rows))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
