"""reactor: a background-job worker for Supabase."""

from reactor.app import Reactor
from reactor.job import Job, PermanentError, RetryLater, Snooze

__all__ = ["Job", "PermanentError", "Reactor", "RetryLater", "Snooze"]
