"""Offline, testable parts of the corpus recipe.

Nothing here downloads or unpacks anything. The builder (:mod:`scripts.corpus.build`)
feeds these functions with audio decoded from the pinned Debian packages listed
in ``sources.toml``; the tests feed them with tiny generated signals.

Rules kept here:

- :func:`check_excluded` refuses any source that overlaps the reserved
  evaluation sources of ``../shared/data/EXCLUDED_SOURCES.md`` (names, ``-*``
  wildcards, other packages of the same game or application, PyPI names).
- :func:`join_events` joins short recordings of one voice (or one sound set)
  into clips of 10-30 s separated by 0.2-0.5 s of band-limited noise at -70 dBFS.
- :func:`mix_under` puts music a fixed number of dB under speech (speech_over_music).
- :func:`generated_silence` makes the silence class by rule (digital zeros,
  dither, low-level noise), labelled as generated.
- :func:`fill_zero_runs` replaces runs of exact digital silence inside recorded
  clips, so that only the silence class carries digital zeros.
- :func:`write_manifest`, :func:`summarize`, :func:`write_sha256sums` write the
  build's records, byte-for-byte the same for the same rows.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf

from msc_core.errors import InputError, ParameterError

try:  # Python 3.11+; the project also supports 3.10, where only the recipe file cannot be read
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - depends on the interpreter
    tomllib = None

SR = 22050
"""Sample rate of every clip in the corpus (mono, 16-bit PCM)."""

LABELS = ("speech", "music", "speech_over_music", "silence", "noise")
"""The classes of the segmentation issue (issue 11)."""

MANIFEST_COLUMNS = ("path", "label", "group", "source", "licence", "label_evidence", "bandwidth_hz",
                    "sample_rate_original", "language", "duration_s", "music_level_db", "original_file", "notes")

RECIPE_DIR = Path(__file__).resolve().parent
SOURCES_TOML = RECIPE_DIR / "sources.toml"
DEFAULT_EXCLUDED = RECIPE_DIR.parents[2] / "shared" / "data" / "EXCLUDED_SOURCES.md"

GAP_S = (0.20, 0.50)
GAP_DBFS = -70.0
CLIP_MAX_S = 30.0
JOIN_MIN_S = 10.0
JOIN_TARGET_S = (15.0, 28.0)


class ExcludedSourceError(InputError):
    """The recipe lists a source that is reserved for judging msc (EXCLUDED_SOURCES.md)."""


class ChecksumError(InputError):
    """A downloaded package is not the pinned file (its sha256 differs)."""


# ----------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Package:
    """One pinned Debian package and what the corpus takes from it.

    Parameters
    ----------
    name, version, sha256 : str
        The package, its pinned version and the sha256 of its ``.deb``.
    family : str
        The game or application the package belongs to (for the excluded check).
    licence : str
        Licence of the audio used, from the package's copyright file.
    takes : tuple of dict
        The ``[[package.take]]`` tables: which files, which rule, label, group.
    """

    name: str
    version: str
    sha256: str
    family: str
    licence: str
    takes: tuple = field(default_factory=tuple)


@dataclass(frozen=True)
class Recipe:
    """The parsed ``sources.toml``."""

    packages: tuple[Package, ...]
    pypi: tuple[str, ...]
    aliases: dict
    settings: dict


def load_recipe(*, path: str | Path = SOURCES_TOML) -> Recipe:
    """Parse the declarative source list.

    Parameters
    ----------
    path : str or Path
        The TOML file (default: ``scripts/corpus/sources.toml``).

    Returns
    -------
    Recipe
        Packages in file order, PyPI sources, the excluded-family aliases and the settings.

    Raises
    ------
    InputError
        A package lacks a field or a take names an unknown label.
    """
    if tomllib is None:
        raise InputError("reading the corpus recipe (sources.toml) needs Python 3.11 or newer (tomllib)")
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    packages = []
    for entry in data.get("package", []):
        missing = [key for key in ("name", "version", "sha256", "family", "licence") if key not in entry]
        if missing:
            raise InputError(f"{path}: package {entry.get('name', '?')} lacks {', '.join(missing)}")
        takes = tuple(entry.get("take", []))
        for take in takes:
            if take.get("label") not in LABELS:
                raise InputError(f"{path}: {entry['name']}: label {take.get('label')!r} is not one of {LABELS}")
        packages.append(Package(entry["name"], entry["version"], entry["sha256"], entry["family"],
                                entry["licence"], takes))
    names = [package.name for package in packages]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: a package is listed twice")
    return Recipe(tuple(packages), tuple(data.get("pypi", {}).get("names", [])),
                  dict(data.get("excluded_family_aliases", {})), dict(data.get("settings", {})))


# ----------------------------------------------------------------------------- excluded sources
_FAMILY_SUFFIX = re.compile(
    r"-(data|music|music-ogg|music-high|common|common-sounds|sounds|songs|songs-[a-z0-9]+|doc|testdata|examples"
    r"|samples|voice|spanish|italian|french|german|cs|nl|[a-z]{2}|[a-z]{2}-[a-z]{2})$")


def family_of(name: str, *, aliases: dict | None = None) -> str:
    """The game or application a package name belongs to.

    Parameters
    ----------
    name : str
        A Debian package name.
    aliases : dict, optional
        Explicit name -> family entries for names that do not show their family
        (``fb-music-high`` is Frozen-Bubble's music).

    Returns
    -------
    str
        The name with data/music/language suffixes stripped (``drascula-music`` -> ``drascula``).
    """
    if aliases and name in aliases:
        return aliases[name]
    stem = name
    while True:
        shorter = _FAMILY_SUFFIX.sub("", stem)
        if shorter == stem or not shorter:
            return stem
        stem = shorter


@dataclass(frozen=True)
class Excluded:
    """What ``EXCLUDED_SOURCES.md`` reserves."""

    debian: tuple[str, ...]
    pypi: tuple[str, ...]
    allowed: tuple[str, ...]


def read_excluded(*, path: str | Path) -> Excluded:
    """Parse ``EXCLUDED_SOURCES.md``.

    The Debian names (and ``-*`` patterns) are the words under ``## Debian packages``,
    the PyPI names those under ``## Audio files shipped inside PyPI packages``; the
    explicitly allowed packages are the back-quoted names in the sentence that
    starts with "Already used by".

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    Excluded
    """
    text = Path(path).read_text(encoding="utf-8")
    sections, current = defaultdict(list), None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip().lower()
            continue
        if current:
            sections[current].append(line)

    def words(key: str) -> tuple[str, ...]:
        """Names in the first paragraph of the section, parenthesised remarks left out."""
        body = next((lines for title, lines in sections.items() if key in title), [])
        paragraph = "\n".join(body).strip().split("\n\n")[0]
        paragraph = re.sub(r"\([^)]*\)", " ", paragraph)
        return tuple(token for token in paragraph.split() if re.fullmatch(r"[a-z0-9][a-z0-9.+*_-]*", token))

    allowed = ()
    sentence = re.search(r"Already used by.*?(?:\n\n|$)", text, re.S)
    if sentence:
        allowed = tuple(re.findall(r"`([a-z0-9][a-z0-9.+-]*)`", sentence.group(0)))
    allowed = tuple(name for name in allowed if not name.endswith(".sh"))
    return Excluded(words("debian"), words("pypi"), allowed)


def check_excluded(*, packages: Sequence[str], pypi: Sequence[str] = (), excluded: Excluded,
                   families: dict | None = None, aliases: dict | None = None) -> None:
    """Stop when a source of the recipe is reserved for judging msc.

    A Debian package overlaps when its name equals a listed name, matches a listed
    ``-*`` pattern, or belongs to the same game or application as a listed
    package (same :func:`family_of`, or the family declared for it in ``families``).
    Packages the file names as allowed pass. PyPI names are compared case- and
    ``-``/``_``-insensitively.

    Parameters
    ----------
    packages : sequence of str
        Debian package names the recipe downloads.
    pypi : sequence of str
        PyPI distributions the recipe takes recordings from.
    excluded : Excluded
        From :func:`read_excluded`.
    families : dict, optional
        package -> declared family (the ``family`` field of ``sources.toml``).
    aliases : dict, optional
        Excluded-name -> family entries that names alone do not reveal.

    Raises
    ------
    ExcludedSourceError
        Naming every overlap and why it overlaps.
    """
    families = families or {}
    plain = [name for name in excluded.debian if "*" not in name]
    patterns = [name for name in excluded.debian if "*" in name]
    banned_families = {family_of(name, aliases=aliases): name for name in plain}
    for pattern in patterns:
        prefix = pattern.split("*", 1)[0].rstrip("-")
        if pattern.endswith("-*") and "*" not in prefix:
            banned_families.setdefault(prefix, pattern)
    problems = []
    for name in sorted(packages):
        if name in excluded.allowed:
            continue
        if name in plain:
            problems.append(f"{name}: listed in EXCLUDED_SOURCES.md")
            continue
        hit = next((pattern for pattern in patterns if fnmatch.fnmatchcase(name, pattern)), None)
        if hit:
            problems.append(f"{name}: matches the excluded pattern {hit}")
            continue
        for fam in sorted({family_of(name, aliases=aliases), families.get(name, "")} - {""}):
            if fam in banned_families:
                problems.append(f"{name}: same game/application ({fam}) as the excluded {banned_families[fam]}")
                break
    norm = lambda s: re.sub(r"[-_.]+", "-", s.lower())  # noqa: E731
    banned_pypi = {norm(name) for name in excluded.pypi}
    problems += [f"PyPI {name}: listed in EXCLUDED_SOURCES.md" for name in sorted(pypi) if norm(name) in banned_pypi]
    if problems:
        raise ExcludedSourceError("sources reserved for judging msc are in the recipe; remove them:\n  "
                                  + "\n  ".join(problems))


def check_recipe_excluded(recipe: Recipe, *, path: str | Path = DEFAULT_EXCLUDED) -> bool:
    """Run :func:`check_excluded` on a whole recipe when the EXCLUDED file exists.

    Returns
    -------
    bool
        True when the file was found and checked, False when it is absent.
    """
    if not Path(path).exists():
        return False
    check_excluded(packages=[package.name for package in recipe.packages], pypi=recipe.pypi,
                   excluded=read_excluded(path=path),
                   families={package.name: package.family for package in recipe.packages},
                   aliases=recipe.aliases)
    return True


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(*, path: str | Path, expected: str) -> None:
    """Raise :class:`ChecksumError` unless the file has the pinned sha256."""
    got = sha256_file(path)
    if got != expected:
        raise ChecksumError(f"{path}: sha256 {got}, the recipe pins {expected}")


# ----------------------------------------------------------------------------- signal rules
def seed_of(*, name: str) -> int:
    """A stable 64-bit seed from a name (the same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def resample(x: np.ndarray, *, rate: int) -> np.ndarray:
    """Mono float signal at ``rate`` -> float32 at :data:`SR` (polyphase, deterministic)."""
    from scipy.signal import resample_poly

    if rate == SR:
        return np.asarray(x, np.float32)
    g = gcd(int(rate), SR)
    return resample_poly(np.asarray(x, np.float64), SR // g, int(rate) // g).astype(np.float32)


def frame_db(x: np.ndarray, *, hop: int) -> np.ndarray:
    """Mean-square level in dB of consecutive frames of ``hop`` samples."""
    n = len(x) // hop
    if n == 0:
        return np.array([-200.0])
    frames = np.asarray(x[: n * hop], np.float64).reshape(n, hop)
    return 10 * np.log10((frames ** 2).mean(axis=1) + 1e-20)


def rms_db(x: np.ndarray) -> float:
    """RMS level in dBFS of a whole signal."""
    return float(10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20))


def active_rms_db(x: np.ndarray, *, floor_db: float = 40.0) -> float:
    """RMS in dBFS over the 10-ms frames within ``floor_db`` of the loudest (pauses left out)."""
    db = frame_db(x, hop=SR // 100)
    active = db[db > db.max() - floor_db]
    return float(10 * np.log10(np.mean(10 ** (active / 10)) + 1e-20))


def trim_quiet_edges(x: np.ndarray, *, below_db: float = 40.0, lead_s: float = 0.05, tail_s: float = 0.08) -> np.ndarray:
    """Cut leading/trailing frames ``below_db`` under the loudest, keeping a little margin."""
    hop = SR // 100
    db = frame_db(x, hop=hop)
    loud = np.nonzero(db > db.max() - below_db)[0]
    if len(loud) == 0:
        return x[:0]
    start = max(0, loud[0] * hop - int(lead_s * SR))
    end = min(len(x), (loud[-1] + 1) * hop + int(tail_s * SR))
    return x[start:end]


def fade(x: np.ndarray, *, seconds: float) -> np.ndarray:
    """Linear fade-in and fade-out of ``seconds`` (at most half the signal each)."""
    n = min(int(seconds * SR), len(x) // 2)
    y = np.array(x, np.float32)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        y[:n] *= ramp
        y[-n:] *= ramp[::-1]
    return y


def band_noise(*, n: int, cutoff_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of unit RMS, band-limited to ``cutoff_hz`` (float32)."""
    w = rng.standard_normal(n)
    if cutoff_hz < SR / 2 and n > 1:
        spectrum = np.fft.rfft(w)
        spectrum[np.fft.rfftfreq(n, 1.0 / SR) > cutoff_hz] = 0
        w = np.fft.irfft(spectrum, n)
    return (w / np.sqrt(np.mean(w ** 2) + 1e-30)).astype(np.float32)


def bandwidth_hz(rate: int) -> int:
    """Nominal audio bandwidth of a source sampled at ``rate`` once stored at :data:`SR`."""
    return int(min(rate, SR) // 2)


def fill_zero_runs(y: np.ndarray, *, cutoff_hz: float, rng: np.random.Generator,
                   min_ms: float = 5.0) -> tuple[np.ndarray, int]:
    """Fill runs of samples that would store as 0 (``|y|`` < 1 LSB for >= ``min_ms``) with -70 dBFS noise.

    Returns
    -------
    (ndarray, int)
        The signal and the number of runs filled.
    """
    quiet = np.abs(y) < 1.0 / 32767
    if not quiet.any():
        return y, 0
    edges = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    keep = (ends - starts) >= int(min_ms / 1000 * SR)
    if not keep.any():
        return y, 0
    mask = np.zeros(len(y), np.float32)
    for a, b in zip(starts[keep], ends[keep]):
        mask[a:b] = 1.0
    noise = band_noise(n=len(y), cutoff_hz=cutoff_hz, rng=rng) * np.float32(10 ** (GAP_DBFS / 20))
    return (y + noise * mask).astype(np.float32), int(keep.sum())


def to_pcm16(y: np.ndarray, *, allow_zero_runs: bool = False, cutoff_hz: float = SR / 2,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, float, int]:
    """Float clip -> int16, scaled down as a whole when it would clip; zero runs filled unless allowed.

    Returns
    -------
    (ndarray, float, int)
        int16 samples, the gain applied in dB (0 or negative), runs of zeros filled.
    """
    y = np.asarray(y, np.float32)
    peak = float(np.abs(y).max()) if len(y) else 0.0
    gain = 1.0 if peak <= 32766 / 32767 else (32766 / 32767) / peak
    y = y * np.float32(gain)
    filled = 0
    if not allow_zero_runs:
        y, filled = fill_zero_runs(y, cutoff_hz=cutoff_hz, rng=rng or np.random.default_rng(0))
    q = np.round(np.clip(y, -1.0, 1.0) * 32767.0).astype(np.int16)
    return q, round(20 * np.log10(gain), 2), filled


def write_wav(*, path: str | Path, q: np.ndarray) -> None:
    """Write int16 mono samples as a 22,050 Hz 16-bit PCM WAV (deterministic bytes)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), q, SR, subtype="PCM_16", format="WAV")


def join_events(events: Sequence[tuple[str, np.ndarray]], *, name: str, cutoff_hz: float,
                clip_max_s: float = CLIP_MAX_S, min_s: float = JOIN_MIN_S,
                target_s: tuple[float, float] = JOIN_TARGET_S) -> list[tuple[np.ndarray, list[str]]]:
    """Join short recordings (in the given order) into clips of ``min_s``..``clip_max_s`` seconds.

    Between recordings goes a pause of 0.2-0.5 s filled with band-limited noise at
    -70 dBFS (never exact zeros); recordings longer than ``clip_max_s`` are cut into
    equal parts. A leftover shorter than ``min_s`` joins the previous clip when that
    stays within ``clip_max_s``, else it is dropped. Draws come from a generator
    seeded by ``name``.

    Parameters
    ----------
    events : sequence of (str, ndarray)
        (original file, float32 signal at :data:`SR`), already trimmed and faded.
    name : str
        Seeds the pause lengths and pause noise.
    cutoff_hz : float
        Bandwidth of the pause noise (that of the sources).

    Returns
    -------
    list of (ndarray, list of str)
        Each clip and the original files in it.
    """
    rng = np.random.default_rng(seed_of(name="join:" + name))
    pieces: list[tuple[str, np.ndarray]] = []
    for rel, x in events:
        if len(x) > clip_max_s * SR:
            parts = int(np.ceil(len(x) / (clip_max_s * SR)))
            size = len(x) // parts
            pieces += [(f"{rel}#part{k + 1}", fade(x[k * size:(k + 1) * size], seconds=0.01)) for k in range(parts)]
        else:
            pieces.append((rel, x))
    groups: list[list[tuple[str, np.ndarray, float]]] = []
    current: list[tuple[str, np.ndarray, float]] = []
    total, target = 0.0, rng.uniform(*target_s)
    for rel, x in pieces:
        length = len(x) / SR
        gap = round(rng.uniform(*GAP_S), 3) if current else 0.0
        if current and total + gap + length > clip_max_s:
            groups.append(current)
            current, total, gap = [], 0.0, 0.0
        current.append((rel, x, gap))
        total += gap + length
        if total >= target:
            groups.append(current)
            current, total, target = [], 0.0, rng.uniform(*target_s)
    if current:
        groups.append(current)
    # a short last clip joins the one before it, or is dropped
    lengths = [sum(len(x) / SR + gap for _, x, gap in group) for group in groups]
    if groups and lengths[-1] < min_s:
        last = groups.pop()
        lengths.pop()
        if groups and lengths[-1] + 0.3 + sum(len(x) / SR + gap for _, x, gap in last[1:]) \
                + len(last[0][1]) / SR <= clip_max_s:
            groups[-1] += [(rel, x, 0.3 if i == 0 else gap) for i, (rel, x, gap) in enumerate(last)]
    clips = []
    for k, group in enumerate(groups):
        if sum(len(x) / SR + gap for _, x, gap in group) < min_s:
            continue
        crng = np.random.default_rng(seed_of(name=f"pause:{name}:{k}"))
        parts, mask = [], []
        for rel, x, gap in group:
            if gap > 0:
                n = int(round(gap * SR))
                parts.append(np.zeros(n, np.float32))
                mask.append(np.ones(n, np.float32))
            parts.append(x)
            mask.append(np.zeros(len(x), np.float32))
        y = np.concatenate(parts)
        if len(group) > 1:
            y = y + band_noise(n=len(y), cutoff_hz=cutoff_hz, rng=crng) * np.float32(10 ** (GAP_DBFS / 20)) \
                * np.concatenate(mask)
        clips.append((y.astype(np.float32), [rel for rel, _, _ in group]))
    return clips


def loop_to(x: np.ndarray, *, seconds: float) -> tuple[np.ndarray, int]:
    """Repeat a loop end to end until it lasts at least ``seconds``; returns (signal, repeats)."""
    repeats = max(1, int(np.ceil(seconds * SR / max(len(x), 1))))
    return np.tile(np.asarray(x, np.float32), repeats), repeats


def mix_under(*, speech: np.ndarray, music: np.ndarray, level_db: float) -> tuple[np.ndarray, float]:
    """Speech with music ``level_db`` dB under it (``level_db`` < 0).

    The music is scaled so that its RMS is ``level_db`` relative to the speech's
    active RMS (:func:`active_rms_db`: 10-ms frames within 40 dB of the loudest,
    so pauses do not lower the reference). Both are cut to the shorter length,
    the music is faded over 50 ms, and if the sum would clip, both are scaled
    down together (the level between them is kept).

    Parameters
    ----------
    speech, music : ndarray
        Float signals at :data:`SR`.
    level_db : float
        Music level relative to speech, in dB (e.g. -6, -12, -18).

    Returns
    -------
    (ndarray, float)
        The mix and the music gain applied (linear).
    """
    if not np.isfinite(level_db):
        raise ParameterError(f"level_db must be finite, got {level_db}")
    n = min(len(speech), len(music))
    s = np.asarray(speech[:n], np.float64)
    m = np.asarray(fade(music[:n], seconds=0.05), np.float64)
    target = active_rms_db(s) + level_db
    gain = 10 ** ((target - rms_db(m)) / 20)
    y = s + gain * m
    peak = np.abs(y).max() if n else 0.0
    if peak > 0.99:
        y *= 0.99 / peak
    return y.astype(np.float32), float(gain)


SILENCE_KINDS = {
    # kind: (description, level in dBFS or None)
    "digital-zero": ("digital silence: every sample 0", None),
    "dither-tpdf": ("TPDF dither only: +-1 LSB triangular noise, as a 16-bit recording of nothing", None),
    "white-80": ("white noise at -80 dBFS RMS", -80.0),
    "white-70": ("white noise at -70 dBFS RMS", -70.0),
    "pink-65": ("pink (1/f) noise at -65 dBFS RMS, like a quiet room", -65.0),
    "brown-60": ("brown (1/f^2) noise at -60 dBFS RMS, like distant rumble", -60.0),
    "hum-70": ("50 Hz mains hum with harmonics at -70 dBFS plus dither", -70.0),
}


def generated_silence(*, kind: str, seconds: float, seed: int) -> np.ndarray:
    """A silence/near-silence clip made by rule (float32 at :data:`SR`).

    Parameters
    ----------
    kind : str
        One of :data:`SILENCE_KINDS`.
    seconds : float
        Length.
    seed : int
        Seeds the noise.
    """
    if kind not in SILENCE_KINDS:
        raise ParameterError(f"unknown silence kind {kind!r}; known: {', '.join(SILENCE_KINDS)}")
    n = int(round(seconds * SR))
    rng = np.random.default_rng(seed)
    lsb = 1.0 / 32767
    if kind == "digital-zero":
        return np.zeros(n, np.float32)
    if kind == "dither-tpdf":
        return ((rng.random(n) - rng.random(n)) * lsb).astype(np.float32)
    level = 10 ** (SILENCE_KINDS[kind][1] / 20)
    if kind.startswith("white"):
        x = rng.standard_normal(n)
    elif kind.startswith("pink") or kind.startswith("brown"):
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1.0 / SR)
        f[0] = f[1]
        spectrum /= np.sqrt(f) if kind.startswith("pink") else f
        spectrum[np.fft.rfftfreq(n, 1.0 / SR) < 10] = 0
        x = np.fft.irfft(spectrum, n)
    else:  # hum
        t = np.arange(n) / SR
        x = sum(np.sin(2 * np.pi * 50 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in (1, 2, 3, 5))
    x = x / np.sqrt(np.mean(x ** 2) + 1e-30) * level
    if kind.startswith("hum"):
        x = x + (rng.random(n) - rng.random(n)) * lsb
    return x.astype(np.float32)


# ----------------------------------------------------------------------------- records
def _csv_text(rows: Iterable[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in columns})
    return buffer.getvalue()


def write_manifest(*, rows: Sequence[dict], path: str | Path) -> None:
    """Write ``manifest.csv`` (columns :data:`MANIFEST_COLUMNS`), rows sorted by path.

    Raises
    ------
    InputError
        A row has an unknown label, lacks a group or source, or a path repeats.
    """
    paths = [row["path"] for row in rows]
    if len(set(paths)) != len(paths):
        raise InputError("manifest rows repeat a path")
    for row in rows:
        if row.get("label") not in LABELS:
            raise InputError(f"{row.get('path')}: label {row.get('label')!r} is not one of {LABELS}")
        if not row.get("group") or not row.get("source"):
            raise InputError(f"{row.get('path')}: every clip needs a group and a source")
    Path(path).write_text(_csv_text(sorted(rows, key=lambda row: row["path"]), MANIFEST_COLUMNS), encoding="utf-8")


def summarize(*, rows: Sequence[dict]) -> str:
    """The per-class table: clips, minutes, sources, groups, languages, bandwidth.

    Bandwidth is given as the minutes at most 4 kHz wide (telephone / codec), 4-8 kHz
    and wider than 8 kHz, from ``bandwidth_hz``. Languages count the distinct
    ``language`` values (``mixed`` and empty not counted).

    Returns
    -------
    str
        A Markdown table, then the per-source table.
    """
    lines = ["| class | clips | minutes | sources | groups (voices/tracks) | languages | "
             "min <=4 kHz | min 4-8 kHz | min >8 kHz |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label in LABELS:
        rr = [row for row in rows if row["label"] == label]
        if not rr:
            continue
        minutes = lambda sel: sum(float(row["duration_s"]) for row in sel) / 60  # noqa: E731
        bands = [minutes([row for row in rr if lo < int(row["bandwidth_hz"]) <= hi])
                 for lo, hi in ((0, 4000), (4000, 8000), (8000, 10 ** 9))]
        languages = {lang for row in rr for lang in str(row.get("language", "")).split(";")
                     if lang and lang not in ("mixed", "none")}
        lines.append(f"| {label} | {len(rr)} | {minutes(rr):.1f} | {len({row['source'] for row in rr})} | "
                     f"{len({row['group'] for row in rr})} | {len(languages)} | "
                     + " | ".join(f"{b:.1f}" for b in bands) + " |")
    lines += ["", "| source | class | clips | minutes | groups |", "|---|---|---:|---:|---:|"]
    by = defaultdict(list)
    for row in rows:
        by[(row["source"], row["label"])].append(row)
    for (source, label), rr in sorted(by.items(), key=lambda item: (item[0][1], item[0][0])):
        lines.append(f"| {source} | {label} | {len(rr)} | {sum(float(r['duration_s']) for r in rr) / 60:.1f} | "
                     f"{len({r['group'] for r in rr})} |")
    return "\n".join(lines) + "\n"


def write_sha256sums(*, root: str | Path, files: Iterable[str], path: str | Path) -> None:
    """Write ``sha256  relative/path`` lines for ``files`` (relative to ``root``), sorted."""
    root = Path(root)
    lines = [f"{sha256_file(root / rel)}  {rel}\n" for rel in sorted(files)]
    Path(path).write_text("".join(lines), encoding="utf-8")
