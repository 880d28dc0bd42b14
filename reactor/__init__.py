"""reactor: a background-job worker for Supabase."""

from reactor.app import Reactor
from reactor.family import Child
from reactor.job import Job, LeaseLost, PermanentError, RetryLater, Snooze, WaitForChildren

__all__ = [
    "Child",
    "Job",
    "LeaseLost",
    "PermanentError",
    "Reactor",
    "RetryLater",
    "Snooze",
    "WaitForChildren",
]
