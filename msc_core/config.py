"""The one place where feature settings live.

:class:`FeatureConfig` is frozen and hashed. Its hash is written into every
shard row, every shard file's metadata and every model directory, and anything
that combines features with a model checks that the hashes agree
(:func:`require_same_features`).

The hash covers what decides one window's tensor (sample rate, window length,
STFT, mel, frames, layers, colormap). How a file is cut into windows
(:class:`WindowPolicy`) is recorded beside it but not hashed: a model trained on
every window of long files may label only the first window of others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import metadata as importlib_metadata
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import FeatureConfigMismatchError

CLASSES = ("speech", "music", "speech_over_music", "noise")
"""Content classes, in this order: what a label in a manifest or shard may be and what a model may name.

``speech_over_music`` is speech with a music bed under it; ``noise`` is sound
that is neither (effects, applause, crowd, traffic, tones). Silence is found by
energy, never by a model (:mod:`msc_core.segmentation`). A model names a subset
of these, in this order (``model.json``'s ``labels``): the paper's binary models
:data:`LABELS`, msc's models all four.
"""

LABELS = CLASSES[:2]
"""The paper's binary task, speech and music: the published model's outputs and the ``--labels binary`` view."""

#: Bumped whenever the depth-layer algorithm changes in a way the fields below do not show.
FEATURE_ALGORITHM = "depth-layers-v1"


@dataclass(frozen=True)
class WindowPolicy:
    """How a file is cut into fixed-length windows.

    Attributes
    ----------
    mode : {"first", "all"}
        ``"first"``: the paper's rule, one window from the first
        ``window_seconds`` of the file (zero-padded if shorter).
        ``"all"``: windows start every ``hop_seconds`` from 0.
    hop_seconds : float or None
        Distance between window starts for ``mode="all"`` (seconds);
        ``None`` means back to back (equal to the window length).
    min_last_seconds : float
        With ``mode="all"``, a trailing window that holds fewer seconds of
        audio than this is dropped; otherwise it is zero-padded at the end.
        A file shorter than one window always gives one padded window.
    """

    mode: Literal["first", "all"] = "all"
    hop_seconds: float | None = None
    min_last_seconds: float = 2.5

    def __post_init__(self) -> None:
        if self.mode not in ("first", "all"):
            raise ValueError(f"window mode must be 'first' or 'all', not {self.mode!r}")
        if self.hop_seconds is not None and self.hop_seconds <= 0:
            raise ValueError("hop_seconds must be positive")
        if self.min_last_seconds < 0:
            raise ValueError("min_last_seconds must be >= 0")


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of the paper's depth-layer representation (PREPROCESSING.md).

    Attributes
    ----------
    sample_rate : int
        Rate every file is resampled to (Hz).
    window_seconds : float
        Length of one analysed window (s); 5.0 gives 110,250 samples.
    n_fft, hop_length : int
        STFT size and hop (samples); Hann window, centred, zero padding.
    n_mels : int
        Mel bands (Slaney scale and norm), fmin 0, fmax ``sample_rate / 2``.
    top_db : float
        Floor of the dB spectrogram below its maximum.
    frames : int
        Time frames kept, ``int(sample_rate * window_seconds / hop_length)`` = 215.
    layers : int
        Depth layers (equal-width intensity bins over [0, 1]).
    colormap : str
        Matplotlib colormap whose 256-entry table maps values to colours.
    window : WindowPolicy
        How files are cut into windows (recorded, not hashed).
    """

    sample_rate: int = 22050
    window_seconds: float = 5.0
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    top_db: float = 80.0
    frames: int = 215
    layers: int = 8
    colormap: str = "viridis"
    window: WindowPolicy = field(default_factory=WindowPolicy)

    def __post_init__(self) -> None:
        if self.frames != int(self.sample_rate * self.window_seconds / self.hop_length):
            raise ValueError(
                "frames must be int(sample_rate * window_seconds / hop_length) "
                f"= {int(self.sample_rate * self.window_seconds / self.hop_length)}, not {self.frames}"
            )

    # ------------------------------------------------------------------ derived sizes
    @property
    def window_samples(self) -> int:
        """Samples in one window at ``sample_rate`` (110,250 for the paper)."""
        return int(round(self.sample_rate * self.window_seconds))

    @property
    def hop_samples(self) -> int:
        """Samples between window starts at ``sample_rate``."""
        hop = self.window.hop_seconds or self.window_seconds
        return int(round(self.sample_rate * hop))

    @property
    def tensor_shape(self) -> tuple[int, int, int, int]:
        """Shape of one model input: (layers, n_mels, frames, 1)."""
        return (self.layers, self.n_mels, self.frames, 1)

    @property
    def encoded_shape(self) -> tuple[int, int]:
        """Shape of one compact window: (n_mels, frames) colormap indices, uint8."""
        return (self.n_mels, self.frames)

    # ------------------------------------------------------------------ identity
    def feature_dict(self) -> dict[str, Any]:
        """The fields that decide a window's tensor, plus the algorithm version."""
        fields = dataclasses.asdict(self)
        fields.pop("window")
        fields["algorithm"] = FEATURE_ALGORITHM
        return fields

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit hash of :meth:`feature_dict` (not of the window policy)."""
        canonical = json.dumps(self.feature_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def with_window(self, **changes: Any) -> "FeatureConfig":
        """A copy with other window-policy fields (same feature hash)."""
        return dataclasses.replace(self, window=dataclasses.replace(self.window, **changes))

    def to_json(self) -> str:
        """JSON text with every field, the algorithm version and the hash."""
        payload = dataclasses.asdict(self)
        payload["algorithm"] = FEATURE_ALGORITHM
        payload["hash"] = self.hash
        return json.dumps(payload, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> "FeatureConfig":
        """Inverse of :meth:`to_json`; refuses text whose stored hash does not match."""
        payload = json.loads(text)
        stored_hash = payload.pop("hash", None)
        algorithm = payload.pop("algorithm", FEATURE_ALGORITHM)
        if algorithm != FEATURE_ALGORITHM:
            raise FeatureConfigMismatchError(
                f"features were made by {algorithm!r}; this msc computes {FEATURE_ALGORITHM!r}"
            )
        window = WindowPolicy(**payload.pop("window", {}))
        config = cls(**payload, window=window)
        if stored_hash is not None and stored_hash != config.hash:
            raise FeatureConfigMismatchError(
                f"feature config hash {stored_hash} does not match its fields ({config.hash})"
            )
        return config


def msc_version() -> str:
    """The installed msc version ("unknown" when run from a bare checkout)."""
    try:
        return importlib_metadata.version("msc")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


PAPER = FeatureConfig()
"""The paper's settings (PREPROCESSING.md), windows every 5 s."""


def require_same_features(expected: FeatureConfig | str, found: FeatureConfig | str, *, what: str) -> None:
    """Raise :class:`FeatureConfigMismatchError` unless both hashes agree.

    Parameters
    ----------
    expected, found : FeatureConfig or str
        Configs or their hashes; ``expected`` is what the consumer was built for.
    what : str
        Names the two sides in the message, e.g. ``"model vs shards in /data/x"``.
    """
    expected_hash = expected if isinstance(expected, str) else expected.hash
    found_hash = found if isinstance(found, str) else found.hash
    if expected_hash != found_hash:
        raise FeatureConfigMismatchError(
            f"{what}: feature config {found_hash} differs from the expected {expected_hash}; "
            "re-featurize with the model's config or use a model trained on these features"
        )
