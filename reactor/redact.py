"""Text on its way out of the worker, to a log line or to a job row its owner reads.

Secrets (the service key and any configured with `secrets`) are replaced by `[REDACTED]`, and
what Postgres cannot store in a text column (NUL, lone surrogates) is replaced, never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

REDACTED = "[REDACTED]"


class Redactor:
    def __init__(self, secrets: Sequence[str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __contains__(self, text: str) -> bool:
        return any(secret in text for secret in self._secrets)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            value = value.replace(secret, REDACTED)
        return value

    def storable(self, value: str) -> str:
        """`value` redacted, with every NUL and lone surrogate replaced by U+FFFD."""
        value = self.text(value).replace("\x00", "\ufffd")
        # A lone surrogate survives a UTF-16 round trip only as U+FFFD.
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
