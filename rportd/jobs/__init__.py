"""Remote commands and scripts: job records, the multi-client runner, retention."""

from .model import CommandRefused, Job, JobSpec, NoAnswer
from .service import JobListener, JobService

__all__ = ["CommandRefused", "Job", "JobListener", "JobService", "JobSpec", "NoAnswer"]
