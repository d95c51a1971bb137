"""One deadline per HTTP exchange for `requests`: connect, send and the whole answer.

urllib3's timeouts bound each socket operation, so a server that sends a byte just before every timeout
holds a call for ever. Inside ``with Deadline(seconds)``, every socket the thread's session opens or
reuses is registered; when the deadline passes, the process's deadline thread (`_Watchdog`) shuts them
down, which wakes the blocked read at once (it then fails as a broken connection, and
:attr:`Deadline.expired` says why). Sessions get this through :func:`watch_sockets`. (aiohttp has it built
in: ``ClientTimeout(total=...)``.)
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from types import TracebackType
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

_local = threading.local()


class Deadline:
    """Shut down, at ``seconds`` from entering, every socket this thread's watched sessions use."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._over = False  # the block was left: the deadline no longer shuts anything

    def __enter__(self) -> Deadline:
        self._outer = getattr(_local, "deadline", None)
        _local.deadline = self
        _watchdog.add(time.monotonic() + self.seconds, self)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        with self._lock:
            self._over = True
            self._sockets.clear()
        _local.deadline = self._outer

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        """Shut down the sockets of the block, unless it was left."""
        with self._lock:
            if self._over:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


class _Watchdog:
    """One daemon thread that expires each `Deadline` at its time (a `threading.Timer` a deadline started and
    ended a thread per HTTP request: about 150 us of CPU). Started on first use, again in a forked child
    (which has none of its parent's threads)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Deadline]] = []  # a heap; a deadline left early stays till due
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._started = False

    def add(self, at: float, deadline: Deadline) -> None:
        with self._changed:
            if not self._started:
                threading.Thread(target=self._run, name="altcraft-deadlines", daemon=True).start()
                self._started = True
            heapq.heappush(self._due, (at, next(self._order), deadline))
            if self._due[0][2] is deadline:  # sooner than the thread waits for
                self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    heapq.heappop(self._due)[2].expire()
                self._changed.wait(self._due[0][0] - now if self._due else None)


def _new_watchdog() -> None:
    global _watchdog
    _watchdog = _Watchdog()


_watchdog = _Watchdog()
os.register_at_fork(after_in_child=_new_watchdog)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _watch(sock: socket.socket | None) -> None:
    deadline = getattr(_local, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _Watched:
    """Mixin of urllib3 connections: register the socket of a new or reused connection."""

    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


def _watch_manager(manager: PoolManager) -> PoolManager:
    # a SOCKS proxy manager has pools of its own; those keep per-operation timeouts only
    if manager.pool_classes_by_scheme.get("http") is HTTPConnectionPool:
        manager.pool_classes_by_scheme = _POOLS
    return manager


class DeadlineAdapter(HTTPAdapter):
    """An HTTP adapter whose connections honour the thread's :class:`Deadline` (e.g. for ``HttpHook``)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_manager(self.poolmanager)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> PoolManager:
        return _watch_manager(super().proxy_manager_for(*args, **kwargs))


def watch_sockets(session: requests.Session) -> requests.Session:
    """Make every HTTP adapter of ``session`` (proxied ones too) honour the thread's :class:`Deadline`."""
    for adapter in session.adapters.values():
        if isinstance(adapter, HTTPAdapter) and not isinstance(adapter, DeadlineAdapter):
            _watch_manager(adapter.poolmanager)
            proxy_manager_for = adapter.proxy_manager_for
            adapter.proxy_manager_for = lambda *a, _for=proxy_manager_for, **k: _watch_manager(_for(*a, **k))
    return session
