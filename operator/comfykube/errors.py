"""Errors that end or delay a job.

Every error carries a `reason` (CamelCase, stable, for machines) and a
`message` (for people). The same pair lands in status, CLI output, events and
chat, so the message never holds a traceback.

`retryable` says whether trying the same step again later can help (ComfyUI
or S3 down) or not (a bad spec, a missing checkpoint).
"""

from __future__ import annotations


class JobError(Exception):
    """Base class: a job-level failure with a reason and a readable message."""

    reason: str = "Failed"
    retryable: bool = False
    #: Longest pause before the next attempt (None: the runner's backoff cap). A wait
    #: that costs one cheap read per check sets a short one, so it ends within seconds.
    max_retry_delay: float | None = None

    def __init__(self, message: str, *, reason: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidSpec(JobError):
    """The spec breaks a rule (bounds, patterns, unknown fields)."""

    reason = "InvalidSpec"


class WorkflowError(JobError):
    """A workflow template is missing or its bindings point at nothing."""

    reason = "InvalidWorkflow"


class ComfyUIUnavailable(JobError):
    """ComfyUI does not answer, or answers with a server error. Retry later."""

    reason = "ComfyUIUnavailable"
    retryable = True


class PreflightFailed(JobError):
    """A value is not offered by this ComfyUI (checkpoint, sampler, scheduler)."""

    reason = "PreflightFailed"


class PromptRejected(JobError):
    """ComfyUI refused the workflow (400 with node_errors, or a client bug 500)."""

    reason = "PromptRejected"


class ExecutionFailed(JobError):
    """ComfyUI accepted the prompt but a node failed while running."""

    reason = "ExecutionFailed"


class Interrupted(JobError):
    """The prompt was interrupted in ComfyUI (by us or by someone else)."""

    reason = "Interrupted"


class PromptLost(JobError):
    """ComfyUI forgot the prompt: in neither /queue nor /history (restart, deletion)."""

    reason = "PromptLost"
    retryable = True


class DeadlineExceeded(JobError):
    """The job ran past its deadline and was cancelled."""

    reason = "DeadlineExceeded"


class InputImageFailed(JobError):
    """An input image could not be fetched, or it is not a picture we hand to ComfyUI.

    Not retryable unless the cause may pass (the URL's server down, a time-out).
    """

    reason = "InputImageFailed"


class WaitingForJob(JobError):
    """An input comes from another ImageJob that has not succeeded yet (or is not created yet).

    Retried every few seconds, before a backend slot is taken: the wait costs no GPU time.
    """

    reason = "WaitingForJob"
    retryable = True
    max_retry_delay = 2.0


class DownloadFailed(JobError):
    """An output image could not be fetched or failed a byte check."""

    reason = "DownloadFailed"


class StorageUnavailable(JobError):
    """The object store does not answer. Retry later."""

    reason = "StorageUnavailable"
    retryable = True


class StorageVerificationFailed(JobError):
    """The stored object does not match what was uploaded (size or checksum)."""

    reason = "StorageVerificationFailed"


class JobCancelled(JobError):
    """The job was cancelled by its owner (deletion or a Cancel button)."""

    reason = "Cancelled"
