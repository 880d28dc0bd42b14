"""A TCP proxy that delays every chunk by a fixed one-way time, both ways, in order.

Put in front of Postgres, it gives a client the distance the local stack's hosted profile gives
reactor's worker (docs/hosted-supabase.md, "Distance"): with a 20 ms round trip each chunk waits
10 ms on its way to the server and 10 ms on its way back. Chunks are timed as they arrive and
sent when due, so a pipelined stream keeps its throughput and pays only the latency; nothing is
reordered. bench/hosted_peers.py runs one for pgqueuer in its event loop, beside the local stack.

    python bench/delay_proxy.py [--target 127.0.0.1:5432] [--port 6543] [--round-trip-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class DelayProxy:
    """Listens on `host`:`port` (0: any free port) and relays every connection to `target`."""

    def __init__(self, target: tuple[str, int], round_trip_ms: float, host: str = "127.0.0.1", port: int = 0):
        self.target, self.delay = target, round_trip_ms / 2000
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task] = set()

    async def __aenter__(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._relay, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, database_url: str) -> str:
        """`database_url` with its host and port replaced by this proxy's."""
        parts = urlsplit(database_url)
        user = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{user + '@' if user else ''}{self.host}:{self.port}"))

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._relays.add(task)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            self._relays.discard(task)
            return
        try:
            # Either direction ending (EOF, reset) ends the connection, as a close would.
            await asyncio.wait(
                [
                    asyncio.create_task(self._pipe(client_reader, server_writer)),
                    asyncio.create_task(self._pipe(server_reader, client_writer)),
                ],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
            self._relays.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy `reader` to `writer`, each chunk sent `delay` after it arrived."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            with contextlib.suppress(OSError):
                while chunk := await reader.read(65536):
                    queue.put_nowait((loop.time() + self.delay, chunk))
            queue.put_nowait((loop.time() + self.delay, b""))

        reading = asyncio.create_task(read())
        try:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not chunk:
                    return
                writer.write(chunk)
                await writer.drain()
        except OSError:
            return
        finally:
            reading.cancel()


async def main(target: str, port: int, round_trip_ms: float) -> None:
    host, _, target_port = target.rpartition(":")
    async with DelayProxy((host, int(target_port)), round_trip_ms, port=port) as proxy:
        print(f"127.0.0.1:{proxy.port} -> {target}, {round_trip_ms / 2:g} ms each way", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default="127.0.0.1:5432", help="host:port to relay to")
    parser.add_argument("--port", type=int, default=6543, help="port to listen on, 127.0.0.1")
    parser.add_argument("--round-trip-ms", type=float, default=20.0, help="half of it is added each way")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.target, args.port, args.round_trip_ms))
