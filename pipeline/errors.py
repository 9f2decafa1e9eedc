"""Everything the pipeline raises at its door; the server and the tools catch these and nothing else.

No torch here: the API process imports this module.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of the pipeline's errors; the message is one sentence a person can act on."""


class WeightsError(PipelineError, RuntimeError):
    """A weights directory or file that cannot be loaded; the message says what is missing or wrong."""


class Refused(PipelineError, ValueError):
    """A job that cannot run as asked (too large for the GPU, an unusable start image): say why, plainly."""


class RequestTooLarge(Refused):
    """A request whose estimated peak does not fit the GPU under the active plan."""


class StartImageError(Refused):
    """The start image cannot be used; the message says why, in one sentence."""


class LoraError(Refused):
    """A requested LoRA that cannot be used (unknown name, no LoRA directory, built for another model)."""


class PlanError(PipelineError, ValueError):
    """An unknown memory plan name, or a GPU too small for any plan."""


class OutOfMemory(PipelineError):
    """The device ran out of memory during a job; `phase` is where (load, stage1, stage2, decode, ...)."""

    def __init__(self, message: str, phase: str | None = None):
        super().__init__(message)
        self.phase = phase


class Cancelled(PipelineError):
    """The cancel check returned true; the job stopped and its partial output was removed."""


class GroupFailed(PipelineError):
    """A rank of a multi-GPU group died or stopped answering mid-job: the group must restart (the job is retried)."""
