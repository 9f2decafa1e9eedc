"""Worker groups (issue 12): GPUs per group, how many groups `serve` starts, the rank command line."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys

import pytest

from server.core.config import ServerConfig
from server.core.errors import CommandError
from server.entrypoints.serve import worker_command, worker_count
from server.worker.group import GroupLauncher, _first_ended
from server.worker.supervisor import Supervisor


def test_each_group_gets_its_own_gpus():
    supervisor = Supervisor(["true"], 2, list(range(8)), gpus_per_worker=4)
    assert [slot.env["CUDA_VISIBLE_DEVICES"] for slot in supervisor.slots] == ["0,1,2,3", "4,5,6,7"]
    single = Supervisor(["true"], 2, [3, 5])
    assert [slot.env["CUDA_VISIBLE_DEVICES"] for slot in single.slots] == ["3", "5"]


@pytest.mark.parametrize(
    ("gpus", "per_job", "workers"),
    [(8, 1, 8), (8, 2, 4), (8, 8, 1), (6, 4, 1), ([], 2, 1)],  # [] : no GPU, one CPU group (testing mode)
)
def test_worker_count(gpus, per_job, workers):
    ids = list(range(gpus)) if isinstance(gpus, int) else gpus
    assert worker_count(dataclasses.replace(ServerConfig(), gpus_per_job=per_job), ids) == workers


def test_too_few_gpus_for_one_group_is_refused():
    with pytest.raises(CommandError, match="needs 4 GPUs; 2 are visible"):
        worker_count(dataclasses.replace(ServerConfig(), gpus_per_job=4), [0, 1])
    with pytest.raises(CommandError, match="at least 1"):
        worker_count(dataclasses.replace(ServerConfig(), gpus_per_job=0), [0])


def test_worker_command_passes_the_group_size():
    assert "--gpus-per-job" not in worker_command(ServerConfig())
    command = worker_command(dataclasses.replace(ServerConfig(), gpus_per_job=4))
    assert command[command.index("--gpus-per-job") + 1] == "4"


@pytest.mark.parametrize(
    ("codes", "cause"),
    [
        ([None, None], None),            # running
        ([None, 0], None),               # a follower done: the leader decides
        ([0, None], (0, 0)),             # the leader stopped: the group stops
        ([1, -9], (1, -9)),              # the leader died of the killed rank's absence
        ([None, 2, -15], (2, -15)),      # the signal is the cause whatever the rank order
        ([3, 4], (0, 3)),                # no signal: the lowest rank
    ],
)
def test_the_rank_that_ends_the_group_is_the_cause(codes, cause):
    assert _first_ended(codes) == cause


def test_a_group_whose_ranks_all_die_at_once_still_logs_the_killed_rank(caplog, tmp_path):
    # Rank 1 holds a lock and kills itself; rank 0 waits on the lock and exits the moment it is
    # freed, as a leader does when a collective breaks. Both are usually gone by the launcher's
    # next poll: the log must still name rank 1, the cause.
    lock = tmp_path / "lock"
    hold = f"import fcntl, time; f = open({str(lock)!r}, 'w'); fcntl.flock(f, fcntl.LOCK_EX)"
    scripts = {0: f"import time; time.sleep(0.2); {hold}; raise SystemExit(1)",
               1: f"{hold}; import os, signal; time.sleep(0.4); os.kill(os.getpid(), signal.SIGKILL)"}
    launcher = GroupLauncher(lambda rank, _address: [sys.executable, "-c", scripts[rank]], 2, label="g")
    with caplog.at_level(logging.ERROR, logger="ltx_server.group"):
        assert launcher.run() == 128 + signal.SIGKILL
    assert "g: rank 1 killed by signal 9; stopping the group" in caplog.text
