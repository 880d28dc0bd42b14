"""A running local stack on a free port, over the test's own database."""

from collections.abc import AsyncIterator

import pytest

from reactor.devstack.stack import Stack, serve


@pytest.fixture
async def devstack(database_url: str) -> AsyncIterator[Stack]:
    async with serve(database_url, port=0) as stack:
        yield stack
