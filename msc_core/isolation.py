"""A supervised child process with a hard deadline per call, for work that may hang in C code or the kernel.

Checking a clock between decode blocks cannot stop a decoder stuck inside one
call (a read blocked on a stalled server or a FIFO, a loop in a C library).
:class:`ChildProcess` runs such work in a long-lived Python child instead: the
parent sends a generator function and its arguments, receives the items it
yields one by one (so nothing large is held twice), and waits for each with
the call's deadline, even part-way through an item (a child stopped or stuck
while sending cannot hold the parent). Starting the child, and its optional
``warm_up`` (e.g. importing and caching what the work needs), do not count
against that deadline. A call that overruns kills the child (SIGKILL) and raises
:class:`~msc_core.errors.ChildProcessFailed`; so does a child that dies. The
next call starts a fresh child. Only functions importable by name can be sent.

The child exits when its request pipe closes (the parent exited) or when it
sees that its parent is gone, even while stuck in a blocking call.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import math
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import ChildProcessFailed, MscError

ORPHAN_CHECK_S = 1.0
START_TIMEOUT_S = 300.0
_REPLY_HEADER = struct.Struct("!Q")  # each reply: its pickle's length in bytes, then the pickle


class ChildProcess:
    """A long-lived Python child that runs generator functions for this process, one call at a time.

    Use as a context manager, or call :meth:`close`; :func:`shared_child` gives
    one per process that lives until the process exits.

    Parameters
    ----------
    warm_up : callable or None
        A function importable by name that a new child runs before its first call.
    """

    def __init__(self, *, warm_up: Callable[[], object] | None = None):
        self._warm_up = f"{warm_up.__module__}:{warm_up.__qualname__}" if warm_up else ""
        self._process: subprocess.Popen | None = None
        self._requests: Connection | None = None
        self._replies: int | None = None  # file descriptor of the reply pipe

    def __enter__(self) -> "ChildProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """Process id of the running child; None before the first call and after a kill."""
        return self._process.pid if self._process else None

    def stream(self, function: Callable[..., Iterator[Any]], /, *args, timeout_s: float, **kwargs) -> Iterator[Any]:
        """Yield what ``function(*args, **kwargs)`` yields, run in the child, within ``timeout_s`` wall seconds.

        Exceptions raised in the child are raised here. Leaving the iteration
        early kills the child (it may still be sending).

        Raises
        ------
        ChildProcessFailed
            The call took longer than ``timeout_s`` (the child was killed), or the child died.
        """
        self.start()
        deadline = time.monotonic() + timeout_s
        self._requests.send((function, args, kwargs))
        finished = False
        try:
            while True:
                try:
                    kind, value = _receive(self._replies, deadline)
                except TimeoutError:
                    raise ChildProcessFailed(f"took longer than {timeout_s:g} s; killed", timed_out=True) from None
                except (EOFError, OSError):
                    code = self._process.wait()
                    raise ChildProcessFailed(f"process died (exit code {code})", timed_out=False) from None
                if kind == "item":
                    yield value
                    continue
                finished = True
                if kind == "error":
                    raise value
                return
        finally:
            if not finished:
                self.close()

    def close(self) -> None:
        """Kill the child, if any, and wait for it."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait()
        self._requests.close()
        os.close(self._replies)
        self._process = self._requests = self._replies = None

    def start(self) -> None:
        """Start the child unless it runs (calls do so when needed) and wait until it has warmed up.

        Raises
        ------
        ChildProcessFailed
            The child did not start and warm up within :data:`START_TIMEOUT_S`.
        """
        if self._process is not None:
            return
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "msc_core.isolation", str(request_read), str(reply_write), self._warm_up],
                pass_fds=(request_read, reply_write), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
        finally:
            os.close(request_read)
            os.close(reply_write)
        self._requests = Connection(request_write, readable=False)
        self._replies = reply_read
        try:
            ready = _receive(self._replies, time.monotonic() + START_TIMEOUT_S) == ("ready", None)
        except (TimeoutError, EOFError, OSError):
            ready = False
        if not ready:
            self.close()
            raise ChildProcessFailed(f"could not start a child process within {START_TIMEOUT_S:g} s",
                                     timed_out=False)


@functools.cache
def shared_child(*, warm_up: Callable[[], object] | None = None) -> ChildProcess:
    """This process's one :class:`ChildProcess` per ``warm_up``, created on first use and closed at exit."""
    child = ChildProcess(warm_up=warm_up)
    atexit.register(child.close)
    return child


def _send(fd: int, reply: tuple[str, Any]) -> None:
    """Write one reply to the pipe ``fd`` (pickled whole first, so a pickling error writes nothing)."""
    data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    for part in (_REPLY_HEADER.pack(len(data)), data):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


def _receive(fd: int, deadline: float) -> tuple[str, Any]:
    """Read one reply from the pipe ``fd``, all of it before ``deadline`` (``time.monotonic()`` seconds).

    Raises
    ------
    TimeoutError
        The deadline passed, possibly part-way through the reply.
    EOFError
        The writing end closed (the child is gone).
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)

    def read_exactly(size: int) -> bytearray:
        buffer = bytearray(size)
        view, received = memoryview(buffer), 0
        while received < size:
            if not poller.poll(max(0, math.ceil((deadline - time.monotonic()) * 1000))):
                raise TimeoutError
            count = os.readv(fd, [view[received:]])
            if not count:
                raise EOFError
            received += count
        return buffer

    (size,) = _REPLY_HEADER.unpack(read_exactly(_REPLY_HEADER.size))
    return pickle.loads(read_exactly(size))


def _serve(requests: Connection, replies: int, warm_up: str) -> None:
    """The child's loop: warm up, say so, then run each request and send its items, then its end or error."""
    if warm_up:
        module, _, name = warm_up.partition(":")
        getattr(importlib.import_module(module), name)()
    _send(replies, ("ready", None))
    while True:
        try:
            function, args, kwargs = requests.recv()
        except EOFError:
            return
        try:
            for item in function(*args, **kwargs):
                _send(replies, ("item", item))
        except Exception as error:  # any failure goes back to the caller, as itself when it pickles
            try:
                _send(replies, ("error", error))
            except (pickle.PicklingError, TypeError, AttributeError):
                _send(replies, ("error", MscError(f"{type(error).__name__}: {error}")))
        else:
            _send(replies, ("end", None))


def _exit_when_orphaned() -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(1)


if __name__ == "__main__":
    threading.Thread(target=_exit_when_orphaned, daemon=True).start()
    _serve(Connection(int(sys.argv[1]), writable=False), int(sys.argv[2]), sys.argv[3])
