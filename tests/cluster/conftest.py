"""The ``slurm_cluster`` fixture: one real SLURM cluster on localhost for the whole session.

Tests that use it are marked ``slurm`` (and ``slow``, so that CI runs them only in its slurm
phase). Where the cluster cannot start (no packages, not root, a daemon refusing), they are skipped
with the reason, unless ``SOLO_EXT_REQUIRE_SLURM=1`` (set by ``.ci/run``) turns that into a failure
so that CI cannot pass without running them. The daemons it started are stopped at the end of the
session, also after a failed start.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.cluster.slurm import ClusterUnavailable, SlurmCluster

REQUIRE_SLURM = "SOLO_EXT_REQUIRE_SLURM"


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def slurm_cluster():
    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, so that pytest still runs the tear-down below.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    cluster = SlurmCluster()
    try:
        try:
            cluster.start()
        except ClusterUnavailable as err:
            if os.environ.get(REQUIRE_SLURM) == "1":
                reason = f"{REQUIRE_SLURM}=1 but the local SLURM cluster did not start: {err}"
                pytest.fail(reason, pytrace=False)
            pytest.skip(f"no local SLURM cluster: {err}")
        print(f"\nlocal SLURM up in {cluster.timings} s (folder {cluster.root})")
        yield cluster
    finally:
        cluster.stop()  # also after a failed start (stop is idempotent)
        signal.signal(signal.SIGTERM, previous)
