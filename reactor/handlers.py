"""Handlers and their registry: which function runs a job type, in which table, under what limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from reactor.config import TABLE_NAME
from reactor.job import Job
from reactor.retry import RetryPolicy

HandlerFunction = Callable[[Job], Awaitable[Any]]


@dataclass(frozen=True)
class Handler:
    job_type: str
    function: HandlerFunction
    table: str
    timeout: float | None
    max_attempts: int | None  # at most this many attempts, even if the row allows more
    retry: RetryPolicy | None  # None: the worker's default policy


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], Handler] = {}

    def add(self, handler: Handler) -> None:
        if not handler.job_type or len(handler.job_type) > 200:
            raise ValueError("a job type is 1 to 200 characters")
        if not TABLE_NAME.match(handler.table):
            raise ValueError(f"invalid job table name {handler.table!r}")
        if handler.timeout is not None and not handler.timeout > 0:
            raise ValueError(f"{handler.job_type}: timeout must be above 0 seconds")
        if handler.max_attempts is not None and not 1 <= handler.max_attempts <= 1000:
            raise ValueError(f"{handler.job_type}: max_attempts must be from 1 to 1000")
        key = (handler.table, handler.job_type)
        if key in self._handlers:
            raise ValueError(f"a handler for {handler.job_type!r} in table {handler.table!r} exists already")
        self._handlers[key] = handler

    def get(self, table: str, job_type: str) -> Handler | None:
        return self._handlers.get((table, job_type))

    def tables(self) -> list[str]:
        return sorted({table for table, _ in self._handlers})

    def job_types(self, table: str) -> list[str]:
        return sorted(job_type for t, job_type in self._handlers if t == table)

    def __len__(self) -> int:
        return len(self._handlers)
