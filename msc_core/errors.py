"""One exception family for everything msc refuses to do.

Every error a user can meet derives from :class:`MscError`, so a batch job can
catch exactly one type, write a clear error row and go on with the next file.
"""

from __future__ import annotations


class MscError(Exception):
    """Base class of every error raised by msc on purpose."""


class AudioDecodeError(MscError):
    """An audio file could not be turned into samples.

    Parameters
    ----------
    path : str
        The file (or URI) that failed.
    reason : str
        What was wrong, in words a person can act on.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.path, self.reason)


class FeatureConfigMismatchError(MscError):
    """Features made with one config were offered to something built for another."""


class ModelLoadError(MscError):
    """A model directory is missing, malformed, of the wrong shape, or unsafe to load."""


class InputError(MscError):
    """A source list, manifest or dataset layout the jobs cannot use as given."""


class ChildProcessFailed(MscError):
    """Work sent to a supervised child process overran its deadline (the child was killed) or the child died.

    Parameters
    ----------
    message : str
        What happened, e.g. ``"took longer than 900 s; killed"``.
    timed_out : bool
        True for an overrun, False for a child that died by itself.
    """

    def __init__(self, message: str, *, timed_out: bool):
        super().__init__(message)
        self.timed_out = timed_out


class ParameterError(MscError, ValueError):
    """An argument or setting outside what msc accepts (a negative temperature, a zero hop, ...)."""


class OutputExistsError(MscError, FileExistsError):
    """An output location is taken by something msc must not overwrite (e.g. ``--out`` names a file)."""


class StorageFullError(MscError, OSError):
    """The output device or bucket has no space left: the job stopped, its last committed snapshot intact."""


class CorruptShardError(InputError):
    """A shard or part file is truncated, fails its checksums or is not Parquet; the message names the file."""
