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


class FeatureConfigMismatchError(MscError):
    """Features made with one config were offered to something built for another."""


class ModelLoadError(MscError):
    """A model directory is missing, malformed, of the wrong shape, or unsafe to load."""


class InputError(MscError):
    """A source list, manifest or dataset layout the jobs cannot use as given."""
