"""What the tests share: fixtures (a pytest plugin, `fixtures.py`) and helpers for the contract
(`contract.py`), the local stack's Realtime (`realtime.py`), the worker (`worker.py`), the worker
on the in-memory store (`memory_worker.py`) and the examples (`examples.py`). Tests import from
here, never from one another or from a conftest."""
