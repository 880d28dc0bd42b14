"""The Supabase client the examples' handlers share: the project's own API with the service key,
the same `SUPABASE_URL` and key the worker runs with (never a database connection)."""

from __future__ import annotations

import os

from supabase import AsyncClient, acreate_client

_client: AsyncClient | None = None


async def supabase() -> AsyncClient:
    global _client
    if _client is None:
        key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY") or os.environ["SUPABASE_SERVICE_KEY"]
        _client = await acreate_client(os.environ["SUPABASE_URL"], key)
    return _client
