"""Prefect flows over the ``augment`` library, and the ``augment`` console command."""

from __future__ import annotations

import os
import sys
import threading


def _forget_prefect_services_in_child() -> None:
    """Keep a forked child of a process that ran a flow from exiting with code 1.

    Prefect 3.8.8 registers each of its background services (the API log and event workers) with
    ``threading._register_atexit``; in a forked child it resets the services, which leaves their
    exit hook asserting on a dropped event, so every fork child (a DataLoader worker feeding
    ``GanAugmenter`` samples, a ``multiprocessing`` pool) dies at exit with code 1 and no message, and
    the DataLoader raises "worker exited unexpectedly". The child has no service thread to drain, so
    its copies of those hooks are dropped; the parent keeps its own.
    """
    services = sys.modules.get("prefect._internal.concurrency.services")  # no import in the child
    hooks = getattr(threading, "_threading_atexits", None)
    if services is None or hooks is None:
        return
    base = services._QueueServiceBase
    hooks[:] = [h for h in hooks if not isinstance(getattr(getattr(h, "func", h), "__self__", None), base)]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_prefect_services_in_child)
