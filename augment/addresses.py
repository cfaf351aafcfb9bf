"""Where the tool connects to, checked by form before anything connects: MLflow tracking URIs and
Dask scheduler addresses (the config validates its fields with these; the command line reuses them
before it dials a scheduler or opens a store).
"""

from __future__ import annotations

import os
import urllib.parse

#: MLflow store schemes taken as they are (a database or Databricks); sqlite and http(s) are checked in full.
_OTHER_STORE_SCHEMES = ("postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")
_DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")


def split_host_port(location: str) -> tuple[str, int | None]:
    """``host:port`` (``[v6]:port``) -> (host, port); ValueError when malformed or the port is out of range."""
    parts = urllib.parse.urlsplit(f"//{location}")
    if not parts.hostname or parts.path or parts.query or parts.fragment or "@" in location:
        raise ValueError("no host")
    return parts.hostname, parts.port  # .port raises ValueError outside 0..65535


def tracking_uri_problem(uri: str) -> str | None:
    """What is wrong with an MLflow tracking URI, or None when its form is usable.

    Accepted: ``sqlite:///FILE`` (relative) or ``sqlite:////ABS/FILE``, ``http(s)://HOST[:PORT][/PATH]``,
    and the database/Databricks URIs MLflow knows (left to MLflow). Plain paths and ``file:`` are
    MLflow's file store, which refuses to start unless MLFLOW_ALLOW_FILE_STORE is set.

    Example:
        >>> tracking_uri_problem("sqlite:///mlruns.db") is None
        True
        >>> tracking_uri_problem("htp://host:5000")
        "unsupported scheme 'htp': use sqlite:///mlruns.db or http(s)://HOST:PORT"
    """
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError as err:
        return f"not a URI ({err})"
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.lower().startswith("sqlite:///") else ""
        if not path or path == ":memory:" or path.endswith("/"):
            return (
                "sqlite URIs need three slashes and a file: sqlite:///mlruns.db (relative) or sqlite:////abs/mlruns.db"
            )
        return None
    if scheme in ("http", "https"):
        try:
            split_host_port(parts.netloc.rsplit("@", 1)[-1])
        except ValueError:
            return f"{scheme} URIs need a host (and a port in 1..65535): {scheme}://HOST:PORT"
        return None
    if scheme in _OTHER_STORE_SCHEMES or uri in _OTHER_STORE_SCHEMES:
        return None
    if scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
            return None
        return "a plain path means MLflow's retired file store: use sqlite:///mlruns.db or http(s)://HOST:PORT"
    return f"unsupported scheme {parts.scheme!r}: use sqlite:///mlruns.db or http(s)://HOST:PORT"


def dask_address_problem(address: str) -> str | None:
    """What is wrong with a Dask scheduler address, or None for ``[tcp|tls|ws|wss|ucx]://HOST:PORT`` or ``HOST:PORT``.

    Example:
        >>> dask_address_problem("tcp://10.0.0.5:8786") is None
        True
        >>> dask_address_problem("tcp://scheduler")
        'expected tcp://HOST:PORT (a port in 1..65535)'
    """
    scheme, sep, location = address.strip().rpartition("://")
    if sep and scheme not in _DASK_SCHEMES:
        return f"unsupported scheme {scheme!r}: expected tcp://HOST:PORT"
    try:
        _, port = split_host_port(location)
    except ValueError:
        port = None
    if not port:
        return "expected tcp://HOST:PORT (a port in 1..65535)"
    return None
