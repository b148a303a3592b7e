"""The job contract shared by the router Lambda and the node agent: keys, limits, schema and Lua scripts."""

from jobqueue.contract import (
    JOB_TTL_S,
    Job,
    JobError,
    decode,
    encode,
    new_job,
    validate,
)
from jobqueue.queue import AsyncJobQueue, EnqueueError, Entry, JobQueue

__all__ = [
    "JOB_TTL_S",
    "AsyncJobQueue",
    "EnqueueError",
    "Entry",
    "Job",
    "JobError",
    "JobQueue",
    "decode",
    "encode",
    "new_job",
    "validate",
]
