"""Whether a worker row's process is known to be gone.

Worker ids start with the host's name (`<host>-w<slot>-<random>` under `serve`, `<host>-<pid>-<random>`
alone), and rows record the pid. On the host a row names, a pid that no longer exists is a dead
worker for certain: its row must not count as ready (after a crash the row is still fresh for a
few seconds) and its job can be recovered at once. Rows of other hosts are judged by age only.
"""

from __future__ import annotations

import os
import re
import socket


def local_worker_gone(worker_id: str, pid: int | None, host: str | None = None) -> bool:
    """True when the worker ran on this host and its process no longer exists."""
    host = socket.gethostname() if host is None else host
    # The whole id must be this host's pattern: a host named `a` must not claim `a-b`'s workers.
    if not pid or not re.fullmatch(rf"{re.escape(host)}-(?:w\d+|\d+)-[0-9a-f]+", worker_id):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by another user
        return False
    return False
