"""Check a wandb sweep file before launching it: every point composed and validated, none trained.

python sweep_dry_run.py scripts/sweeps/uniformity_weight.yaml
python sweep_dry_run.py my_sweep.yaml --config-path scripts/pretrain/cifar --max 20
python sweep_dry_run.py scripts/sweeps/paper/cifar100-u-mae.yaml --check-with accelerator=cpu precision=32

Prints each point's command line (as the wandb agent would run it) and OK or the one-line error;
exits 1 if any point is invalid, 2 if the sweep file itself is.
"""

import argparse
import sys

from solo_ext.run.exits import exit_on_user_error
from solo_ext.run.sweeps import dry_run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a wandb sweep YAML whose program is main_pretrain.py")
    parser.add_argument(
        "--config-path",
        default=None,
        help="the folder of the base config (as main_pretrain.py's --config-path); default: the "
        "command's --config-path, else main_pretrain.py's own default",
    )
    parser.add_argument("--max", type=int, default=None, help="check at most this many points")
    parser.add_argument(
        "--check-with",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides added when checking each point, not to the launched command; e.g. "
        "accelerator=cpu precision=32 to check a GPU sweep on a machine without a GPU",
    )
    args = parser.parse_args()
    with exit_on_user_error():
        failed = dry_run(args.sweep, config_path=args.config_path, max_points=args.max, extra=args.check_with)
    if failed:
        print(f"{failed} invalid point(s)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
