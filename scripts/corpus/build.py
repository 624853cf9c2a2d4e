"""Build the training corpus from the pinned packages of ``sources.toml``.

Usage (normally through ``bash scripts/corpus/build.sh OUT``, which downloads first)::

    python -m scripts.corpus.build OUT [--cache OUT/.cache] [--jobs N]
    python -m scripts.corpus.build --list-debs      # "name=version sha256" per line, for build.sh

Steps: check the sources against ``../shared/data/EXCLUDED_SOURCES.md`` (stop on an
overlap), verify each ``.deb`` in ``CACHE/debs`` against its pinned sha256, unpack
it with ``dpkg-deb -x``, apply each take's rule (``tracks``, ``loops``,
``events``), then derive codec speech, speech over music and generated silence
from the clips just written, and write ``manifest.csv``, ``summary.md``,
``packages.csv``, ``licenses/`` and ``SHA256SUMS``. Every list is sorted and
every random draw is seeded by a name, so the same packages and the same
ffmpeg give the same bytes; ``--jobs`` does not change the output.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from msc_core.errors import InputError  # noqa: E402
from scripts.corpus import recipe as R  # noqa: E402

MUSIC_PER_TRACK_S = 60.0
MIN_TRACK_S = 5.0
LOOP_CLIP_S = 12.0
SPEECH_OVER_MUSIC_DB = (-6.0, -12.0, -18.0)

CODECS = {
    # name: (ffmpeg encode arguments, decode-side format or None, bandwidth Hz, coded rate, description)
    "gsm-fr": (["-c:a", "libgsm", "-ar", "8000", "-f", "gsm"], "gsm", 4000, 8000, "GSM 06.10 full rate, 13 kbit/s"),
    "codec2-3200": (["-c:a", "libcodec2", "-mode", "3200", "-ar", "8000", "-f", "codec2"], None, 4000, 8000,
                    "Codec 2 vocoder, 3200 bit/s"),
    "codec2-1300": (["-c:a", "libcodec2", "-mode", "1300", "-ar", "8000", "-f", "codec2"], None, 4000, 8000,
                    "Codec 2 vocoder, 1300 bit/s"),
    "mp3-8k": (["-c:a", "libmp3lame", "-b:a", "8k", "-ar", "8000", "-f", "mp3"], None, 4000, 8000,
               "MP3 at 8 kbit/s, 8 kHz"),
    "mp3-16k": (["-c:a", "libmp3lame", "-b:a", "16k", "-ar", "16000", "-f", "mp3"], None, 8000, 16000,
                "MP3 at 16 kbit/s, 16 kHz"),
    "speex-nb": (["-c:a", "libspeex", "-ar", "8000", "-f", "ogg"], None, 4000, 8000, "Speex narrowband (8 kHz)"),
    "g723.1": (["-c:a", "g723_1", "-b:a", "6300", "-ar", "8000", "-f", "g723_1"], "g723_1", 4000, 8000,
               "G.723.1 at 6.3 kbit/s"),
    "g726-16k": (["-c:a", "adpcm_g726", "-b:a", "16k", "-ar", "8000", "-f", "wav"], None, 4000, 8000,
                 "G.726 ADPCM at 16 kbit/s"),
    "telephone-mulaw": (["-af", "highpass=f=300,lowpass=f=3400", "-c:a", "pcm_mulaw", "-ar", "8000", "-f", "wav"],
                        None, 3400, 8000, "telephone band 300-3400 Hz, G.711 mu-law"),
    "opus-6k": (["-c:a", "libopus", "-b:a", "6k", "-ar", "8000", "-f", "ogg"], None, 4000, 8000,
                "Opus at 6 kbit/s, narrowband"),
}


def log(*parts) -> None:
    print(*parts, flush=True)


# ----------------------------------------------------------------------------- packages
def find_deb(debs: Path, package: R.Package) -> Path:
    """The pinned ``.deb`` in the cache, verified; raises InputError/ChecksumError."""
    version = package.version.split(":", 1)[-1]
    candidates = sorted(debs.glob(f"{package.name}_*.deb"))
    for path in candidates:
        if path.name.replace("%3a", ":").split("_")[1] in (version, package.version):
            R.verify_sha256(path=path, expected=package.sha256)
            return path
    raise InputError(f"{package.name}={package.version} is not in {debs} (have: "
                     f"{', '.join(p.name for p in candidates) or 'nothing'}); run scripts/corpus/build.sh to download")


def unpack(deb: Path, into: Path) -> Path:
    """``dpkg-deb -x`` once per package (a marker file records completion)."""
    if not (into / ".unpacked").exists():
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
        (into / ".unpacked").touch()
    return into


def walk(root: Path, *, pattern: str, exclude: str | None = None) -> list[str]:
    """Regular files (no symlinks) under ``root`` whose relative path matches; sorted."""
    rx, ex = re.compile(pattern), re.compile(exclude) if exclude else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            if rx.search(rel) and not (ex and ex.search(rel)):
                found.append(rel)
    return sorted(found)


def qt_rcc_extract(rcc: Path, out: Path, *, pattern: str) -> list[str]:
    """Extract the entries of a Qt binary resource file (``.rcc``) whose path matches ``pattern``.

    The format: a 20-byte header (magic ``qres``, version, offsets of the tree, the
    data and the names); tree nodes of 14 bytes (v1) or 22 bytes (v2+); a data
    entry is a 4-byte length then the bytes (zlib-compressed, after a 4-byte
    size, when flag 1 is set); a name is a 2-byte length, a 4-byte hash, UTF-16BE.
    """
    blob = rcc.read_bytes()
    if blob[:4] != b"qres":
        raise InputError(f"{rcc}: not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    node_size = 14 if version == 1 else 22
    rx = re.compile(pattern)
    extracted = []

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset:names + offset + 2])
        start = names + offset + 6
        return blob[start:start + 2 * length].decode("utf-16-be")

    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        at = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", blob[at:at + 6])
        name = name_at(name_offset) if index else ""
        if flags & 2:
            count, first = struct.unpack(">II", blob[at + 6:at + 14])
            folder = f"{prefix}{name}/" if index else prefix
            stack += [(first + k, folder) for k in range(count)]
            continue
        (data_offset,) = struct.unpack(">I", blob[at + 10:at + 14])
        (length,) = struct.unpack(">I", blob[data + data_offset:data + data_offset + 4])
        raw = blob[data + data_offset + 4:data + data_offset + 4 + length]
        path = prefix + name
        if rx.search(path):
            if flags & 1:
                raw = zlib.decompress(raw[4:])
            target = out / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(raw)
            extracted.append(path)
    return sorted(extracted)


# ----------------------------------------------------------------------------- decoding
def ffmpeg_f32(args: list[str], *, data: bytes | None = None) -> np.ndarray:
    """Run ffmpeg with output f32le on stdout; raise InputError with its message on failure."""
    result = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *args, "-f", "f32le", "-"], input=data,
                            capture_output=True)
    if result.returncode != 0:
        raise InputError("ffmpeg: " + result.stderr.decode(errors="replace")[-300:])
    return np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)


def decode(path: Path, *, fmt: str | None = None, start_s: float = 0.0,
           seconds: float | None = None) -> tuple[np.ndarray, int, float]:
    """Decode to mono float32 at :data:`recipe.SR` (channel mean, polyphase resampling).

    Returns
    -------
    (ndarray, int, float)
        Samples, the original sample rate, the file's whole duration in seconds.
    """
    if fmt is None:
        try:
            with sf.SoundFile(str(path)) as fh:
                rate, frames = fh.samplerate, fh.frames
                if start_s:
                    fh.seek(int(start_s * rate))
                x = fh.read(-1 if seconds is None else int(seconds * rate), dtype="float32", always_2d=True)
            return R.resample(x.mean(axis=1), rate=rate), rate, frames / rate
        except (RuntimeError, sf.LibsndfileError, TypeError):
            pass
    if fmt == "gsm":
        rate, duration = 8000, os.path.getsize(path) / 33 * 0.02
    else:
        probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                                "stream=sample_rate:format=duration", "-of", "default=nw=1", str(path)],
                               capture_output=True, text=True)
        fields = dict(line.split("=", 1) for line in probe.stdout.split() if "=" in line)
        if "sample_rate" not in fields:
            raise InputError(f"{path}: ffprobe finds no audio")
        rate, duration = int(fields["sample_rate"]), float(fields.get("duration", "nan"))
    args = (["-f", fmt] if fmt else []) + (["-ss", f"{start_s:.3f}"] if start_s else []) \
        + (["-t", f"{seconds:.3f}"] if seconds else []) + ["-i", str(path), "-vn", "-ac", "1", "-ar", str(rate)]
    x = ffmpeg_f32(args)
    if not np.isfinite(duration):
        duration = len(x) / rate
    return R.resample(x, rate=rate), rate, duration


# ----------------------------------------------------------------------------- rules
def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def track_family(stem: str) -> str:
    """Versions of one piece share a group: strip remix/old/slow/fast/.../numbered suffixes."""
    s = stem.lower()
    while True:
        shorter = re.sub(r"([_-](old|remix|slow|fast|ultraslow|sd|map|loop)|[_-]?\d+)$", "", s)
        if shorter == s or not shorter:
            return s
        s = shorter


def clip_row(*, rel: str, label: str, group: str, job: dict, rate: int, language: str, original: str,
             duration_s: float, notes: str, bandwidth: int | None = None, level: str = "") -> dict:
    return dict(path=rel, label=label, group=group, source=job["package"], licence=job["licence"],
                label_evidence=job["evidence"], bandwidth_hz=bandwidth or R.bandwidth_hz(rate),
                sample_rate_original=str(rate), language=language, duration_s=f"{duration_s:.3f}",
                music_level_db=level, original_file=original, notes=notes)


def store(out: Path, rel: str, y: np.ndarray, *, cutoff_hz: float, allow_zero_runs: bool = False) -> tuple[float, str]:
    """Write a clip; returns (duration, note about gain / filled zero runs)."""
    q, gain_db, filled = R.to_pcm16(y, allow_zero_runs=allow_zero_runs, cutoff_hz=cutoff_hz,
                                    rng=np.random.default_rng(R.seed_of(name="fill:" + rel)))
    R.write_wav(path=out / rel, q=q)
    note = ""
    if filled:
        note += f" {filled} run(s) of digital silence in the source filled with {R.GAP_DBFS:.0f} dBFS noise."
    if gain_db:
        note += f" Scaled by {gain_db:.2f} dB to stay within full scale."
    return len(q) / R.SR, note


def tracks_job(job: dict) -> tuple[list[dict], list[str]]:
    """Up to 60 s from the middle of a track, in equal clips of at most 30 s (5 s at least)."""
    path, out = Path(job["path"]), Path(job["out"])
    _, rate, duration = decode(path, fmt=job.get("format"), seconds=0.01)
    if duration < MIN_TRACK_S:
        return [], [f"{job['package']}:{job['rel']}: {duration:.1f} s < {MIN_TRACK_S} s, skipped"]
    if duration > MUSIC_PER_TRACK_S + 10:
        start = round((duration - MUSIC_PER_TRACK_S) / 2, 3)
        x, _, _ = decode(path, fmt=job.get("format"), start_s=start, seconds=MUSIC_PER_TRACK_S)
        where = "central part"
    else:
        x0, _, _ = decode(path, fmt=job.get("format"))
        hop = R.SR // 100
        db = R.frame_db(x0, hop=hop)
        loud = np.nonzero(db > db.max() - 50)[0]
        a, b = (loud[0] * hop, (loud[-1] + 1) * hop) if len(loud) else (0, 0)
        x = x0[a:b]
        if len(x) > MUSIC_PER_TRACK_S * R.SR:
            cut = (len(x) - int(MUSIC_PER_TRACK_S * R.SR)) // 2
            a, x = a + cut, x[cut:cut + int(MUSIC_PER_TRACK_S * R.SR)]
        start, where = a / R.SR, "whole track, silent edges trimmed"
    parts = max(1, int(np.ceil(len(x) / (R.CLIP_MAX_S * R.SR) - 1e-9)))
    size = len(x) // parts
    rows, notes = [], []
    for k in range(parts):
        seg = R.fade(x[k * size:(k + 1) * size], seconds=0.02)
        if len(seg) < MIN_TRACK_S * R.SR or R.rms_db(seg) < -50:
            notes.append(f"{job['package']}:{job['rel']}: part {k + 1} short or nearly silent, skipped")
            continue
        rel = f"{job['label']}/{job['name']}__{k + 1}.wav"
        dur, extra = store(out, rel, seg, cutoff_hz=R.bandwidth_hz(rate))
        note = (f"{job['note']} Excerpt {k + 1}/{parts} of {len(x) / R.SR:.1f} s taken from a {duration:.1f} s "
                f"file ({where}).{extra}")
        rows.append(clip_row(rel=rel, label=job["label"], group=job["group"], job=job, rate=rate,
                             language=job["language"], original=f"{job['origin']}@{start + k * size / R.SR:.2f}"
                             f"+{len(seg) / R.SR:.2f}s", duration_s=dur, notes=note))
    return rows, notes


def loops_job(job: dict) -> tuple[list[dict], list[str]]:
    """A short loop repeated end to end into one clip of 12 s."""
    x, rate, duration = decode(Path(job["path"]), fmt=job.get("format"))
    if duration < 1.0 or R.rms_db(x) < -50:
        return [], [f"{job['package']}:{job['rel']}: loop shorter than 1 s or silent, skipped"]
    y, repeats = R.loop_to(x, seconds=LOOP_CLIP_S)
    y = R.fade(y[:int(LOOP_CLIP_S * R.SR)], seconds=0.02)
    rel = f"{job['label']}/{job['name']}.wav"
    dur, extra = store(Path(job["out"]), rel, y, cutoff_hz=R.bandwidth_hz(rate))
    note = f"{job['note']} A {duration:.2f} s loop repeated {repeats} times, cut to {LOOP_CLIP_S:.0f} s.{extra}"
    return [clip_row(rel=rel, label=job["label"], group=job["group"], job=job, rate=rate, language=job["language"],
                     original=job["origin"], duration_s=dur, notes=note)], []


def events_job(job: dict) -> tuple[list[dict], list[str]]:
    """Short recordings of one set (one voice, one language, one sound set) joined into 10-30 s clips."""
    events, notes, rates = [], [], []
    for path, rel in job["files"]:
        try:
            x, rate, _ = decode(Path(path), fmt=job.get("format"))
        except InputError as error:
            notes.append(f"{job['set']}: {rel}: {error}, skipped")
            continue
        if len(x) == 0 or R.frame_db(x, hop=R.SR // 100).max() < -50:
            notes.append(f"{job['set']}: {rel} silent or empty, skipped")
            continue
        if np.abs(x).max() > 4.0:
            notes.append(f"{job['set']}: {rel} decodes to {np.abs(x).max():.0f}x full scale (broken), skipped")
            continue
        x = R.trim_quiet_edges(x)
        if len(x) < 0.15 * R.SR:
            notes.append(f"{job['set']}: {rel} shorter than 0.15 s after trimming, skipped")
            continue
        events.append((rel, R.fade(x, seconds=0.01)))
        rates.append(rate)
    if not events:
        return [], notes + [f"{job['set']}: nothing usable"]
    rate = min(rates)
    clips = R.join_events(events, name=job["set"], cutoff_hz=R.bandwidth_hz(rate))
    rows = []
    for k, (y, originals) in enumerate(clips, 1):
        rel = f"{job['label']}/{job['name']}__{k:03d}.wav"
        dur, extra = store(Path(job["out"]), rel, y, cutoff_hz=R.bandwidth_hz(rate))
        note = job["note"] + "."
        if len(originals) > 1:
            note += (f" Joins {len(originals)} consecutive recordings (sorted file order) with 0.2-0.5 s pauses of "
                     f"{R.GAP_DBFS:.0f} dBFS noise.")
        if rate <= 8000:
            note += " Source is 8 kHz (telephone band)."
        common = os.path.commonpath(originals) if len(originals) > 1 else ""
        if common and all(o.startswith(common + "/") for o in originals):
            original = common + "/{" + "|".join(o[len(common) + 1:] for o in originals) + "}"
        else:
            original = " + ".join(originals)
        rows.append(clip_row(rel=rel, label=job["label"], group=job["group"], job=job, rate=rate,
                             language=job["language"], original=original, duration_s=dur, notes=note + extra))
    return rows, notes


RULES = {"tracks": tracks_job, "loops": loops_job, "events": events_job}


def run_job(job: dict) -> tuple[list[dict], list[str]]:
    try:
        return RULES[job["rule"]](job)
    except Exception as error:  # noqa: BLE001 -- reported and the build fails at the end
        return [], [f"ERROR {job['package']}:{job.get('rel', job.get('set'))}: {type(error).__name__}: {error}"]


# ----------------------------------------------------------------------------- plan
def set_of(rel: str, spec) -> str | None:
    """The set a file belongs to: the first capture of the first matching regex, or a fixed name."""
    if isinstance(spec, str) and not spec.startswith("re:"):
        return spec
    for pattern in ([spec] if isinstance(spec, str) else spec):
        match = re.search(pattern.removeprefix("re:"), rel)
        if match:
            return match.group(1)
    return None


def evenly(items: list, limit: int | None) -> list:
    """At most ``limit`` items spread evenly over the (sorted) list."""
    if not limit or len(items) <= limit:
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def plan(recipe: R.Recipe, *, cache: Path, out: Path) -> tuple[list[dict], dict]:
    debs, unpacked = cache / "debs", cache / "x"
    jobs, used = [], {}
    for package in recipe.packages:
        deb = find_deb(debs, package)
        root = unpack(deb, unpacked / package.name)
        used[package.name] = (package, deb, root)
        for take in package.takes:
            base = root
            if "qt_rcc" in take:
                base = unpacked / f"{package.name}.rcc"
                if not (base / ".extracted").exists():
                    qt_rcc_extract(root / take["qt_rcc"], base, pattern=take["files"])
                    (base / ".extracted").touch()
            rels = walk(base, pattern=take["files"], exclude=take.get("exclude"))
            common = dict(package=package.name, licence=take.get("licence", package.licence), label=take["label"],
                          rule=take["rule"], out=str(out), note=take["note"], format=take.get("format"),
                          evidence=take["evidence"])
            prefix = f"{take['qt_rcc']}:" if "qt_rcc" in take else ""
            if take["rule"] in ("tracks", "loops"):
                stems = {}
                for rel in rels:
                    stems[Path(rel).stem] = stems.get(Path(rel).stem, 0) + 1
                for rel in rels:
                    stem = Path(rel).stem
                    name = stem if stems[stem] == 1 else f"{Path(rel).parent.name}-{stem}"
                    group = take.get("group", "{package}:{family}").format(package=package.name,
                                                                           family=track_family(stem), stem=stem)
                    jobs.append(dict(common, path=str(base / rel), rel=rel, origin=prefix + rel, group=group,
                                     language=take.get("language", "none"), name=f"{package.name}__{slug(name)}",
                                     cost=(base / rel).stat().st_size))
            else:
                sets: dict[str, list[str]] = {}
                for rel in rels:
                    key = set_of(rel, take["set"])
                    if key is not None:
                        sets.setdefault(key, []).append(rel)
                for key in sorted(sets):
                    chosen = evenly(sets[key], take.get("max_files"))
                    seen, files = set(), []
                    for rel in chosen:
                        digest = R.sha256_file(base / rel)
                        if digest in seen:
                            continue
                        seen.add(digest)
                        files.append((str(base / rel), prefix + rel))
                    language = take.get("languages", {}).get(key, take.get("language", "none")).format(set=key)
                    language = language.replace("_", "-")     # BCP-47 style: en-GB, pt-BR
                    group = take.get("group", "{package}:{set}").format(package=package.name, set=key)
                    tag = take.get("tag", "")
                    jobs.append(dict(common, set=f"{package.name}:{tag}{key}", files=files, group=group,
                                     language=language, name=f"{package.name}__{slug(tag + key)}",
                                     note=common["note"].format(set=key, language=language),
                                     cost=sum(os.path.getsize(f) for f, _ in files)))
    return jobs, used


# ----------------------------------------------------------------------------- derived clips
def read_clip(out: Path, rel: str) -> np.ndarray:
    x, rate = sf.read(str(out / rel), dtype="float32")
    assert rate == R.SR
    return x


MUSIC_CODECS = ("g723.1", "g726-16k", "gsm-fr", "mp3-16k", "mp3-8k", "opus-6k", "speex-nb", "telephone-mulaw")
"""Codecs music meets on telephone lines and in low-bitrate streams (Codec 2 is a speech-only vocoder)."""


def codec_job(job: dict) -> tuple[list[dict], list[str]]:
    """Encode a wideband clip (speech or music) with a codec and decode it back; the label is kept."""
    out, row = Path(job["out"]), job["row"]
    args, fmt, bandwidth, rate, description = CODECS[job["codec"]]
    x = read_clip(out, row["path"])
    encoded = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(R.SR), "-ac", "1",
                              "-i", "-", *args, "-"], input=x.astype("<f4").tobytes(), capture_output=True)
    if encoded.returncode != 0:
        return [], [f"ERROR codec {job['codec']} on {row['path']}: {encoded.stderr.decode(errors='replace')[-200:]}"]
    y = ffmpeg_f32((["-f", fmt] if fmt else []) + ["-i", "-", "-ac", "1", "-ar", str(R.SR)], data=encoded.stdout)
    y = np.concatenate([y, np.zeros(max(0, len(x) - len(y)), np.float32)])[:len(x)]
    rel = f"{row['label']}/{Path(row['path']).stem}__{job['codec']}.wav"
    dur, extra = store(out, rel, y, cutoff_hz=bandwidth)
    new = dict(row, path=rel, bandwidth_hz=bandwidth, sample_rate_original=f"{row['sample_rate_original']}>{rate}",
               duration_s=f"{dur:.3f}", source=row["source"],
               label_evidence=f"{row['label_evidence']}; then encoded with {description} (a transformation)",
               original_file=f"{row['path']} (this corpus)",
               notes=f"{description}: {row['path']} encoded and decoded with ffmpeg ({job['codec']}); "
                     f"same {'voice' if row['label'] == 'speech' else 'track'} and group as that clip.{extra}")
    return [new], []


def mix_job(job: dict) -> tuple[list[dict], list[str]]:
    """Speech with music a fixed number of dB under it."""
    out, speech, music, level = Path(job["out"]), job["speech"], job["music"], job["level"]
    y, gain = R.mix_under(speech=read_clip(out, speech["path"]), music=read_clip(out, music["path"]), level_db=level)
    rel = f"speech_over_music/{Path(speech['path']).stem}__under{-int(level):02d}dB.wav"
    dur, extra = store(out, rel, y, cutoff_hz=R.SR / 2)
    return [dict(path=rel, label="speech_over_music", group=speech["group"],
                 source=f"{speech['source']}+{music['source']}",
                 licence=f"speech: {speech['licence']}; music: {music['licence']}",
                 label_evidence=f"mixed by the recipe: speech ({speech['label_evidence']}) + music "
                                f"({music['label_evidence']}) at {level:.0f} dB",
                 bandwidth_hz=min(int(speech["bandwidth_hz"]), int(music["bandwidth_hz"])),
                 sample_rate_original=f"{speech['sample_rate_original']};{music['sample_rate_original']}",
                 language=speech["language"], duration_s=f"{dur:.3f}", music_level_db=f"{level:.0f}",
                 original_file=f"{speech['path']} + {music['path']} (this corpus)",
                 notes=f"Music RMS {level:.0f} dB relative to the speech's active RMS (10-ms frames within 40 dB of "
                       f"the loudest); music group {music['group']}; music faded over 50 ms.{extra}")], []


def silence_job(job: dict) -> tuple[list[dict], list[str]]:
    out, kind, k, seconds = Path(job["out"]), job["kind"], job["k"], job["seconds"]
    x = R.generated_silence(kind=kind, seconds=seconds, seed=R.seed_of(name=f"silence:{kind}:{k}"))
    rel = f"silence/generated__{kind}__{k:02d}.wav"
    dur, _ = store(out, rel, x, cutoff_hz=R.SR / 2, allow_zero_runs=True)
    level = R.SILENCE_KINDS[kind][1]
    return [dict(path=rel, label="silence", group=f"generated:silence:{kind}", source="generated",
                 licence="none (generated by the recipe)", label_evidence="generated by rule: "
                 + R.SILENCE_KINDS[kind][0], bandwidth_hz=R.SR // 2, sample_rate_original=str(R.SR),
                 language="none", duration_s=f"{dur:.3f}", music_level_db="", original_file="",
                 notes=f"GENERATED, not recorded: {R.SILENCE_KINDS[kind][0]}"
                       + (f" ({level:.0f} dBFS)" if level is not None else "") + f"; seed silence:{kind}:{k}.")], []


DERIVED = {"codec": codec_job, "mix": mix_job, "silence": silence_job}


def run_derived(job: dict) -> tuple[list[dict], list[str]]:
    try:
        return DERIVED[job["rule"]](job)
    except Exception as error:  # noqa: BLE001
        return [], [f"ERROR {job['rule']}: {type(error).__name__}: {error}"]


def derived_jobs(rows: list[dict], *, out: Path, settings: dict) -> list[dict]:
    """Codec speech, speech over music and silence jobs, chosen by fixed rules from sorted rows."""
    wide_speech = [r for r in sorted(rows, key=lambda r: r["path"])
                   if r["label"] == "speech" and int(r["bandwidth_hz"]) > 8000]
    music = [r for r in sorted(rows, key=lambda r: r["path"])
             if r["label"] == "music" and int(r["bandwidth_hz"]) > 8000]
    jobs = []
    every = int(settings.get("codec_every", 3))
    names = sorted(CODECS)
    for i, row in enumerate(wide_speech[::every]):
        jobs.append(dict(rule="codec", out=str(out), row=row, codec=names[i % len(names)]))
    music_every = int(settings.get("music_codec_every", 4))
    for i, row in enumerate(music[2::music_every]):
        jobs.append(dict(rule="codec", out=str(out), row=row, codec=MUSIC_CODECS[i % len(MUSIC_CODECS)]))
    mix_every = int(settings.get("mix_every", 3))
    rng = np.random.default_rng(R.seed_of(name="mix-music-choice"))
    for i, row in enumerate(wide_speech[1::mix_every]):
        if music:
            jobs.append(dict(rule="mix", out=str(out), speech=row, music=music[int(rng.integers(len(music)))],
                             level=SPEECH_OVER_MUSIC_DB[i % len(SPEECH_OVER_MUSIC_DB)]))
    per_kind = int(settings.get("silence_clips_per_kind", 6))
    lengths = (10.0, 15.0, 20.0, 30.0, 12.0, 25.0)
    for kind in sorted(R.SILENCE_KINDS):
        for k in range(per_kind):
            jobs.append(dict(rule="silence", out=str(out), kind=kind, k=k, seconds=lengths[k % len(lengths)]))
    return jobs


# ----------------------------------------------------------------------------- main
def run_pool(function, jobs: list[dict], *, workers: int, what: str) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].get("cost", 0))
    ordered = [jobs[i] for i in order]
    if workers <= 1:
        results = map(function, ordered)
        pool = None
    else:
        pool = Pool(workers)
        results = pool.imap_unordered(function, ordered, chunksize=1)
    for i, (r, n) in enumerate(results, 1):
        rows += r
        notes += n
        if i % 50 == 0 or i == len(jobs):
            log(f"  {what}: {i}/{len(jobs)} jobs, {len(rows)} clips")
    if pool:
        pool.close()
        pool.join()
    return rows, notes


def list_debs(recipe: R.Recipe) -> str:
    return "".join(f"{p.name}={p.version} {p.sha256}\n" for p in recipe.packages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?")
    parser.add_argument("--cache")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--excluded", default=str(R.DEFAULT_EXCLUDED))
    parser.add_argument("--list-debs", action="store_true")
    args = parser.parse_args(argv)
    recipe = R.load_recipe()
    checked = R.check_recipe_excluded(recipe, path=args.excluded)
    if args.list_debs:
        sys.stdout.write(list_debs(recipe))
        return 0
    log(f"excluded-source check: {'passed against ' + args.excluded if checked else 'file absent, not checked'}")
    if not args.out:
        parser.error("OUT is required")
    out = Path(args.out).resolve()
    cache = Path(args.cache).resolve() if args.cache else out / ".cache"
    t0 = time.time()
    for label in R.LABELS:
        shutil.rmtree(out / label, ignore_errors=True)
    jobs, used = plan(recipe, cache=cache, out=out)
    log(f"{len(jobs)} jobs from {len(used)} packages")
    rows, notes = run_pool(run_job, jobs, workers=args.jobs, what="sources")
    more, more_notes = run_pool(run_derived, derived_jobs(rows, out=out, settings=recipe.settings),
                                workers=args.jobs, what="derived")
    rows += more
    notes = sorted(notes + more_notes)
    R.write_manifest(rows=rows, path=out / "manifest.csv")
    licences = out / "licenses"
    shutil.rmtree(licences, ignore_errors=True)
    licences.mkdir()
    lines = ["package,version,deb_sha256,family,licence\n"]
    for name in sorted(used):
        package, deb, root = used[name]
        lines.append(f'{name},{package.version},{package.sha256},{package.family},"{package.licence}"\n')
        copyright_file = root / "usr/share/doc" / name / "copyright"
        if copyright_file.exists():
            shutil.copyfile(copyright_file, licences / f"{name}.copyright")
    (out / "packages.csv").write_text("".join(lines), encoding="utf-8")
    summary = R.summarize(rows=rows)
    (out / "summary.md").write_text(summary + "\nnotes:\n" + "".join(f"- {n}\n" for n in notes), encoding="utf-8")
    files = [p.relative_to(out).as_posix() for label in R.LABELS for p in (out / label).glob("*.wav")]
    files += ["manifest.csv", "packages.csv", "summary.md"] + [f"licenses/{p.name}" for p in licences.iterdir()]
    R.write_sha256sums(root=out, files=files, path=out / "SHA256SUMS")
    log(summary)
    log(f"conversion took {time.time() - t0:.0f} s")
    errors = [n for n in notes if n.startswith("ERROR")]
    for error in errors:
        log(error)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
