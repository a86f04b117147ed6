"""Offline weighted kNN evaluation of a pretrained backbone (solo-learn's main_knn.py flags).

python main_knn.py --pretrained_checkpoint_dir trained_models/mae/<run id> \
    --k 10 20 50 --temperature 0.02 0.07 0.2 --distance_function cosine euclidean --feature_type cls mean

Dataset, paths, backbone, feature type, k, T and distance default to those of the run's args.json
(the features its online probe read, its online kNN settings). Prints one row per combination,
each naming its protocol (features, distance, k, T, bank), and writes the table as CSV beside
the checkpoint.
"""

import argparse
import json

from solo_ext.config.schema import DEFAULT_WORKERS


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
    parser.add_argument("--num_workers", type=int, default=DEFAULT_WORKERS, help="default: min(4, CPUs)")
    run_default = "default: the run's own (its args.json)"
    parser.add_argument("--k", type=int, nargs="+", help=run_default)
    parser.add_argument("--temperature", type=float, nargs="+", help=run_default)
    parser.add_argument("--distance_function", nargs="+", help=f"cosine and/or euclidean; {run_default}")
    parser.add_argument("--feature_type", nargs="+", help=f"cls and/or mean; {run_default}")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from solo_ext.run.exits import exit_on_user_error
    from solo_ext.run.knn_eval import format_table, record_results, run_knn

    with exit_on_user_error():
        rows, path = run_knn(**vars(args))
    print(format_table(rows))
    print(f"written to {path}")
    results = record_results(rows, path)
    if results is not None:
        print(f"results: {results}")


if __name__ == "__main__":
    main()
