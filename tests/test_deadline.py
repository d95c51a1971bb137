"""`Deadline` on real sockets: the process's one deadline thread wakes a blocked read at its time, whatever
other deadlines are pending, in a forked child too; a block left in time keeps its sockets."""

from __future__ import annotations

import os
import socket
import threading
import time

from altcraft.deadline import Deadline

SLACK = 1.0  # scheduling noise on a busy machine


def _blocked_read(seconds: float) -> tuple[bool, float]:
    """Read from a socket that never gets data, under a deadline of ``seconds``: (expired, time taken)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        started = time.monotonic()
        with Deadline(seconds) as deadline:
            deadline.watch(ours)
            assert ours.recv(1) == b""  # woken by the shutdown, as a closed connection
        return deadline.expired, time.monotonic() - started


def test_a_deadline_wakes_a_blocked_read_at_its_time() -> None:
    expired, took = _blocked_read(0.3)
    assert expired
    assert 0.3 <= took < 0.3 + SLACK


def test_a_deadline_sooner_than_a_pending_one_is_not_held_back_by_it() -> None:
    ours, theirs = socket.socketpair()
    entered, leave = threading.Event(), threading.Event()

    def long_call() -> None:
        with Deadline(60):
            entered.set()
            leave.wait()

    other = threading.Thread(target=long_call)
    other.start()
    try:
        entered.wait()
        expired, took = _blocked_read(0.3)
    finally:
        leave.set()
        other.join()
        ours.close()
        theirs.close()
    assert expired
    assert took < 0.3 + SLACK


def test_a_block_left_before_its_deadline_keeps_its_sockets() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with Deadline(0.2) as deadline:
            deadline.watch(ours)
        time.sleep(0.5)
        theirs.sendall(b"x")
        assert ours.recv(1) == b"x"
        assert not deadline.expired


def test_deadlines_start_no_thread_per_call() -> None:
    with Deadline(60):
        pass
    threads = set(threading.enumerate())
    with Deadline(60), Deadline(30):
        assert set(threading.enumerate()) == threads


def test_a_deadline_wakes_a_blocked_read_in_a_forked_child() -> None:
    with Deadline(60):  # the parent's deadline thread runs; the child has none of it
        pass
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without pytest's cleanup
        try:
            expired, took = _blocked_read(0.3)
            os.write(write, b"ok" if expired and took < 0.3 + SLACK else b"late")
        finally:
            os._exit(0)
    os.close(write)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.read(read, 10) == b"ok"
    finally:
        os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
