"""Logging through loguru: readable on a terminal, or one JSON object a line for aggregators.

Every line passes a redaction filter first, so a secret (the service key) never reaches any
sink, whatever a message, a bound field or a library's log record carries. The Realtime client
and websockets log through the standard library with URLs that hold the key; they are routed
here so that the same filter applies.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from loguru import logger

from reactor.redact import Redactor

_TEXT_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}<dim>{extra[_fields]}</dim>"
)


class _Redactor(Redactor):
    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def __call__(self, record: Any) -> None:
        record["message"] = self.text(record["message"])
        record["extra"] = {k: self.value(v) for k, v in record["extra"].items()}
        if record["exception"] is not None:
            exc = record["exception"].value
            if exc is not None and str(exc) in self:
                record["exception"] = None
                record["message"] += f" ({type(exc).__name__}: {self.text(str(exc))})"


def _fields(record: Any) -> str:
    shown = {k: v for k, v in record["extra"].items() if not k.startswith("_")}
    return "".join(f" {k}={v}" for k, v in shown.items())


def _json_sink(stream: TextIO) -> Any:
    def write(message: Any) -> None:
        record = message.record
        line: dict[str, Any] = {
            "time": record["time"].isoformat(),
            "level": record["level"].name,
            "message": record["message"],
            "logger": record["name"],
        }
        line.update({k: v for k, v in record["extra"].items() if not k.startswith("_")})
        if record["exception"] is not None:
            exc = record["exception"]
            line["error"] = f"{exc.type.__name__}: {exc.value}" if exc.type else None
        stream.write(json.dumps(line, default=str) + "\n")
        stream.flush()

    return write


class _StdlibToLoguru(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = (
            record.levelname
            if record.levelname in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            else "INFO"
        )
        logger.bind(source=record.name).log(level, record.getMessage())


def setup(log_format: str, level: str, secrets: Sequence[str], stream: TextIO | None = None) -> None:
    """Send every log line to `stream` in `log_format`, with `secrets` redacted. JSON lines go to
    stdout by default, where container platforms and log shippers expect structured output; text
    goes to stderr, for a terminal."""
    stream = stream or (sys.stdout if log_format == "json" else sys.stderr)
    redactor = _Redactor(secrets)

    def patch(record: Any) -> None:
        redactor(record)
        record["extra"]["_fields"] = _fields(record)

    logger.remove()
    logger.configure(patcher=patch)
    if log_format == "json":
        logger.add(_json_sink(stream), level=level, format="{message}", backtrace=False, diagnose=False)
    else:
        logger.add(stream, level=level, format=_TEXT_FORMAT, colorize=stream.isatty(), diagnose=False)
    for name in ("realtime", "websockets", "httpx", "httpcore"):
        std = logging.getLogger(name)
        std.handlers = [_StdlibToLoguru()]
        std.propagate = False
        std.setLevel(logging.WARNING if name != "realtime" else logging.INFO)
