"""What msc prints, in one place: quiet by default, internals only when asked.

Three levels, set once per process by :func:`configure` from ``-q`` / ``-v``:

- ``QUIET`` (``-q``): the one-line summary of each command, and errors;
- ``NORMAL`` (default): also a progress bar per job (files, rate, ETA, on stderr)
  and msc's own warnings;
- ``VERBOSE`` (``-v``): also msc's debug log, Ray's and TensorFlow's own logs,
  and every Ray worker's output.

:func:`configure` must run before Ray or TensorFlow is imported: it sets the
environment variables their C++ parts read (inherited by Ray workers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading

QUIET, NORMAL, VERBOSE = -1, 0, 1

_state = {"level": NORMAL}

#: Environment for the non-verbose levels: TensorFlow's and gRPC's C++ logs, Ray Data's progress bars, and
#: Ray's C++ logs (the driver's ``E ... core_worker.cc`` line about Ray Data's actor arguments reads like a
#: failure; Ray then prints one line saying it took the level from this variable).
_QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "RAY_BACKEND_LOG_LEVEL": "fatal",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
}


def configure(level: int) -> None:
    """Set the output level of this process (and of the Ray workers it starts afterwards).

    Parameters
    ----------
    level : int
        ``QUIET``, ``NORMAL`` or ``VERBOSE``.
    """
    _state["level"] = level
    if level < VERBOSE:
        for name, value in _QUIET_ENV.items():
            os.environ.setdefault(name, value)
    logging.basicConfig(level=logging.DEBUG if level >= VERBOSE else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if level >= VERBOSE
                        else "msc: %(levelname)s: %(message)s", force=True)
    if level < VERBOSE:
        for noisy in ("ray", "absl", "tensorflow", "h5py", "matplotlib", "numba", "fsspec", "botocore", "s3fs"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def level() -> int:
    """The level :func:`configure` set (``NORMAL`` before it is called)."""
    return _state["level"]


def quiet_ray_loggers() -> None:
    """Below ``-v``, keep Ray's Python loggers to errors (Ray Data resets its own level when imported)."""
    if level() < VERBOSE:
        for name in ("ray", "ray.data", "ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)


def ray_init_options() -> dict:
    """Keyword arguments for ``ray.init`` at this level: worker output and Ray's log only with ``-v``."""
    verbose = level() >= VERBOSE
    return {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}


def progress(*, total: int | None = None, unit: str = "files", desc: str = ""):
    """A progress bar on stderr (files done, rate, ETA); silent with ``-q``.

    Parameters
    ----------
    total : int or None
        Units expected, when known (an ETA needs it).
    unit : str
        What one step counts, e.g. ``"files"``.
    desc : str
        Prefix, e.g. the job name.

    Returns
    -------
    tqdm.tqdm
        Call ``update(n)``, ``set_postfix_str(text)`` and ``close()`` (or use it as a context manager).
    """
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, unit=f" {unit}", desc=desc, file=sys.stderr, disable=level() <= QUIET,
                dynamic_ncols=True, mininterval=0.5 if tty else 30.0, leave=tty)


def summary(line: str) -> None:
    """Print a command's one-line result on stdout (at every level)."""
    print(line, flush=True)


def error(command: str, message: str) -> None:
    """Print one error line on stderr: ``msc COMMAND: error: MESSAGE``."""
    print(f"msc {command}: error: {message}", file=sys.stderr, flush=True)


#: Seconds after Ctrl-C before msc exits by itself, should the interrupt be lost (Python drops a
#: KeyboardInterrupt raised inside some handlers, e.g. around a fork while Ray starts).
INTERRUPT_GRACE_S = 15.0


@contextlib.contextmanager
def interruptible(command: str, *, exit_code: int):
    """Ctrl-C inside: one line, ``interrupted; rerun the same command to resume``, and exit ``exit_code``.

    The first Ctrl-C raises :class:`KeyboardInterrupt` in the main thread as usual, so the command
    unwinds (msc renames outputs into place only when complete, so nothing half-written shows); then
    Ray is shut down and the process exits with ``exit_code``. If the interrupt is lost on the way
    (Python drops it inside some handlers, e.g. around a fork while Ray starts), or on a second Ctrl-C,
    the process exits ``INTERRUPT_GRACE_S`` seconds later, or at once. Only the main thread takes
    over the signal; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    said = threading.Event()

    def say_and_exit() -> None:
        if not said.is_set():
            said.set()
            error(command, "interrupted; rerun the same command to resume")
        sys.stdout.flush()
        os._exit(exit_code)

    def on_sigint(signum, frame) -> None:
        timer = threading.Timer(INTERRUPT_GRACE_S, say_and_exit)
        timer.daemon = True
        timer.start()
        signal.signal(signal.SIGINT, lambda *_: say_and_exit())  # a second Ctrl-C: at once
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except KeyboardInterrupt:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        say_and_exit()
    finally:
        signal.signal(signal.SIGINT, previous)
