"""Worker groups (issue 12): GPUs per group, how many groups `serve` starts, the rank command line."""

from __future__ import annotations

import dataclasses

import pytest

from server.core.config import ServerConfig
from server.core.errors import CommandError
from server.entrypoints.serve import worker_command, worker_count
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
