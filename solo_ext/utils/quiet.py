"""Library noise a newcomer cannot act on, silenced where it starts (nothing of ours is hidden)."""

import logging
import warnings


class _DropLitloggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_libraries() -> None:
    """Lightning's advertisement for litlogger on every fit, and its own deprecated use of
    torch's ``LeafSpec`` (lightning/pytorch/utilities/_pytree.py), which we cannot change."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLitloggerTip) for f in logger.filters):
        logger.addFilter(_DropLitloggerTip())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
