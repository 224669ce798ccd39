"""How many threads BLAS may use for the library's numpy work.

The local model and the exact vector search run inside web workers, Celery workers and
request threads, usually several per machine; OpenBLAS starting its own threads on top of
those oversubscribes the cores, and under load a 2-thread matrix product was measured ten
times slower than a 1-thread one. So numpy work here runs with ``MDB_BLAS_THREADS`` threads
(default 1; 0 leaves BLAS alone). Needs ``threadpoolctl`` (in the ``ai`` extra); without it
nothing is limited.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from ..exceptions import ConfigurationError

THREADS_ENV = "MDB_BLAS_THREADS"
_lock = threading.Lock()
_controller: Any = None


def limit_blas_threads() -> Any:
    """A context manager limiting BLAS threads as ``MDB_BLAS_THREADS`` says."""
    global _controller
    raw = os.environ.get(THREADS_ENV, "1")
    try:
        threads = int(raw)
    except ValueError:
        raise ConfigurationError(f"{THREADS_ENV} must be an integer, got {raw!r}") from None
    if threads <= 0:
        return contextlib.nullcontext()
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return contextlib.nullcontext()
        with _lock:
            if _controller is None:
                _controller = ThreadpoolController()
    return _controller.limit(limits=threads, user_api="blas")
