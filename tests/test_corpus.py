"""The corpus recipe's offline parts: excluded-source check, clip rules, mixing, silence, records.

Nothing here downloads or unpacks a package; the signals are generated.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scripts.corpus import build as B
from scripts.corpus import recipe as R
from msc_core.errors import InputError, MscError

needs_tomllib = pytest.mark.skipif(R.tomllib is None, reason="reading sources.toml needs Python 3.11+ (tomllib)")

SHARED_EXCLUDED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "EXCLUDED_SOURCES.md"

EXCLUDED_TEXT = """# Sources that msc must never train on

Reserved, in any version, and any other package of the same game, e.g. `spacegame-*`.

Already used by `build_train_corpus.sh` and allowed there: `spacegame-data-nl` (Dutch voices
only) and `toolbox-data` (its `drums` only).

## Debian packages
spacegame-data spacegame-music fb-music-high codec2-examples
voices-*-hd alsa-utils

## Audio files shipped inside PyPI packages
librosa (its test and example audio;
the library itself is fine) praat-parselmouth pygame

Synthetic speech made with espeak-ng is allowed (it is a generator).
"""


@pytest.fixture()
def excluded(tmp_path) -> R.Excluded:
    path = tmp_path / "EXCLUDED_SOURCES.md"
    path.write_text(EXCLUDED_TEXT)
    return R.read_excluded(path=path)


def test_excluded_file_is_parsed(excluded):
    assert excluded.debian == ("spacegame-data", "spacegame-music", "fb-music-high", "codec2-examples",
                               "voices-*-hd", "alsa-utils")
    assert excluded.pypi == ("librosa", "praat-parselmouth", "pygame")
    assert {"spacegame-data-nl", "toolbox-data"} <= set(excluded.allowed)
    assert "espeak-ng" not in excluded.pypi


@pytest.mark.parametrize("package, why", [
    ("spacegame-music", "listed"),
    ("voices-en-hd", "pattern"),
    ("spacegame-data-fr", "same game"),          # another package of an excluded game
    ("spacegame", "same game"),
    ("frozen-bubble-data", "same game"),         # family known only through the recipe's alias table
])
def test_excluded_check_stops_on_an_overlap(excluded, package, why):
    with pytest.raises(R.ExcludedSourceError, match=re.escape(package) + ".*" + why) as caught:
        R.check_excluded(packages=["hedgewars-data", package], excluded=excluded,
                         aliases={"fb-music-high": "frozen-bubble"})
    assert isinstance(caught.value, MscError) and isinstance(caught.value, InputError)
    assert "hedgewars-data" not in str(caught.value)


def test_excluded_check_uses_declared_families_and_pypi_names(excluded):
    with pytest.raises(R.ExcludedSourceError, match="renamed-game-sounds.*spacegame"):
        R.check_excluded(packages=["renamed-game-sounds"], excluded=excluded,
                         families={"renamed-game-sounds": "spacegame"})
    with pytest.raises(R.ExcludedSourceError, match="Praat_Parselmouth"):
        R.check_excluded(packages=[], pypi=["Praat_Parselmouth"], excluded=excluded)


def test_excluded_check_passes_allowed_and_unrelated_packages(excluded):
    R.check_excluded(packages=["spacegame-data-nl", "toolbox-data", "voices-en-wav", "hedgewars-data"],
                     pypi=["numpy"], excluded=excluded, aliases={"fb-music-high": "frozen-bubble"})


@needs_tomllib
def test_recipe_has_no_overlap_with_the_real_excluded_file():
    if not SHARED_EXCLUDED.exists():
        pytest.skip(f"{SHARED_EXCLUDED} is absent: the reserved-source list lives beside the repo, not in it")
    recipe = R.load_recipe()
    assert R.check_recipe_excluded(recipe, path=SHARED_EXCLUDED) is True
    # and the check is live: adding an excluded game's package stops it
    bad = R.Recipe(recipe.packages + (R.Package("drascula-music", "1", "0" * 64, "drascula", "x"),),
                   recipe.pypi, recipe.aliases, recipe.settings)
    with pytest.raises(R.ExcludedSourceError, match="drascula-music"):
        R.check_recipe_excluded(bad, path=SHARED_EXCLUDED)


@needs_tomllib
def test_recipe_is_declarative_and_pinned():
    recipe = R.load_recipe()
    names = [package.name for package in recipe.packages]
    assert len(names) == len(set(names)) >= 30
    assert "frozen-bubble-data" not in names        # same game as the excluded fb-music-high
    labels = set()
    for package in recipe.packages:
        assert re.fullmatch(r"[0-9a-f]{64}", package.sha256), package.name
        assert package.version and package.licence and package.family
        for take in package.takes:
            assert take["rule"] in B.RULES and take["evidence"] and take["note"]
            re.compile(take["files"])
            if take["rule"] == "events":
                assert "set" in take
            labels.add(take["label"])
    assert labels == {"speech", "music", "noise"}   # speech_over_music and silence are derived/generated


def test_checksum_mismatch_is_an_input_error(tmp_path):
    deb = tmp_path / "x.deb"
    deb.write_bytes(b"not the pinned file")
    with pytest.raises(R.ChecksumError, match="pins"):
        R.verify_sha256(path=deb, expected="0" * 64)
    R.verify_sha256(path=deb, expected=R.sha256_file(deb))


def test_track_families_group_versions_of_one_piece():
    assert B.track_family("theme_remix") == B.track_family("Theme-old") == B.track_family("theme2") == "theme"
    assert B.track_family("battle_slow") == "battle"


# ----------------------------------------------------------------------------- signals
def tone_bursts(seconds: float, *, seed: int, level_db: float = -20.0) -> np.ndarray:
    """Speech-like: 0.3-0.8 s voiced bursts with pauses of digital silence."""
    rng = np.random.default_rng(seed)
    n = int(seconds * R.SR)
    x = np.zeros(n, np.float32)
    t = 0
    while t < n:
        length = int(rng.uniform(0.3, 0.8) * R.SR)
        f0 = rng.uniform(100, 250)
        k = np.arange(min(length, n - t))
        x[t:t + len(k)] = np.sin(2 * np.pi * f0 * k / R.SR) * np.hanning(len(k)) if len(k) > 1 else 0
        t += length + int(rng.uniform(0.1, 0.4) * R.SR)
    return (x / np.sqrt(np.mean(x ** 2)) * 10 ** (level_db / 20) * 0.5).astype(np.float32)


@pytest.mark.parametrize("level", [-6.0, -12.0, -18.0])
def test_music_level_under_speech_is_measured_from_the_output(level):
    speech = tone_bursts(12.0, seed=1)
    music = np.random.default_rng(2).standard_normal(int(14 * R.SR)).astype(np.float32) * 0.3
    y, gain = R.mix_under(speech=speech, music=music, level_db=level)
    n = len(y)
    assert n == len(speech)
    # recover the two parts from the output alone (least squares on the known sources)
    basis = np.stack([speech[:n], R.fade(music[:n], seconds=0.05)], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    speech_part, music_part = basis[:, 0] * coef[0], basis[:, 1] * coef[1]
    measured = R.rms_db(music_part) - R.active_rms_db(speech_part)
    assert measured == pytest.approx(level, abs=0.05)
    assert np.abs(y).max() <= 0.99 + 1e-6


def test_mixing_keeps_the_level_when_it_must_scale_down():
    speech = tone_bursts(10.0, seed=3, level_db=-1.0) * 3
    music = np.random.default_rng(4).standard_normal(10 * R.SR).astype(np.float32)
    y, _ = R.mix_under(speech=speech, music=music, level_db=-6.0)
    assert np.abs(y).max() == pytest.approx(0.99, abs=1e-6)
    basis = np.stack([speech, R.fade(music, seconds=0.05)], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    assert R.rms_db(basis[:, 1] * coef[1]) - R.active_rms_db(basis[:, 0] * coef[0]) == pytest.approx(-6.0, abs=0.05)


def test_generated_silence_kinds_have_their_levels():
    for kind, (_, level) in R.SILENCE_KINDS.items():
        x = R.generated_silence(kind=kind, seconds=5.0, seed=7)
        assert len(x) == 5 * R.SR and x.dtype == np.float32
        if kind == "digital-zero":
            assert not x.any()
        elif kind == "dither-tpdf":
            assert np.abs(x).max() <= 1 / 32767 + 1e-9 and x.any()
        else:
            assert R.rms_db(x) == pytest.approx(level, abs=0.5)
    with pytest.raises(MscError):
        R.generated_silence(kind="loud", seconds=1.0, seed=0)


def test_joined_events_are_10_to_30_s_without_digital_silence():
    events = [(f"set/{i:03d}.wav", R.fade(tone_bursts(float(d), seed=i)[: int(d * R.SR)], seconds=0.01))
              for i, d in enumerate([1.2, 2.5, 0.8, 3.0, 4.1, 2.2] * 8)]
    clips = R.join_events(events, name="test-set", cutoff_hz=4000)
    # a short remainder joins the clip before it only while that stays within 30 s (pauses counted)
    tail = [(f"t/{i}.wav", tone_bursts(2.9, seed=50 + i)) for i in range(12)]
    for y, _ in R.join_events(tail, name="tail", cutoff_hz=4000, target_s=(27.0, 27.0)):
        assert len(y) / R.SR <= 30.0
    assert clips and sum(len(files) for _, files in clips) <= len(events)
    for y, files in clips:
        assert 10.0 <= len(y) / R.SR <= 30.0
        q, gain, filled = R.to_pcm16(y, cutoff_hz=4000, rng=np.random.default_rng(0))
        zero = np.concatenate([[0], (q == 0).astype(np.int8), [0]])
        runs = np.nonzero(np.diff(zero) == -1)[0] - np.nonzero(np.diff(zero) == 1)[0]
        assert runs.max(initial=0) < 0.005 * R.SR     # only the silence class holds digital zeros
    # long recordings are cut into equal parts of at most 30 s
    long = R.join_events([("long.wav", tone_bursts(70.0, seed=9))], name="long", cutoff_hz=11025)
    assert [len(y) // R.SR for y, _ in long] == [23, 23, 23]
    assert [files for _, files in long] == [["long.wav#part1"], ["long.wav#part2"], ["long.wav#part3"]]


# ----------------------------------------------------------------------------- records
def make_tiny_corpus(out: Path) -> list[dict]:
    """A few generated clips of every class written through the recipe's writers."""
    rows = []
    clips = {
        "speech/voice-a__001.wav": ("speech", "toy:voice-a", "toy-speech", tone_bursts(2.0, seed=11), "en", 11025),
        "speech/voice-b__001__gsm-fr.wav": ("speech", "toy:voice-b", "toy-speech",
                                            tone_bursts(1.5, seed=12), "fr", 4000),
        "music/track__1.wav": ("music", "toy:track", "toy-music",
                               np.sin(np.arange(2 * R.SR) * 2 * np.pi * 440 / R.SR).astype(np.float32) * 0.3,
                               "none", 11025),
        "silence/generated__dither-tpdf__00.wav": ("silence", "generated:silence:dither-tpdf", "generated",
                                                   R.generated_silence(kind="dither-tpdf", seconds=1.0, seed=1),
                                                   "none", 11025),
        "noise/sfx__001.wav": ("noise", "toy:sfx", "toy-sfx",
                               np.random.default_rng(5).standard_normal(R.SR).astype(np.float32) * 0.1, "none", 11025),
    }
    mix, _ = R.mix_under(speech=clips["speech/voice-a__001.wav"][3], music=clips["music/track__1.wav"][3],
                         level_db=-12.0)
    clips["speech_over_music/voice-a__001__under12dB.wav"] = ("speech_over_music", "toy:voice-a",
                                                              "toy-speech+toy-music", mix, "en", 11025)
    for rel, (label, group, source, y, language, bandwidth) in clips.items():
        q, _, _ = R.to_pcm16(y, allow_zero_runs=(label == "silence"), rng=np.random.default_rng(R.seed_of(name=rel)))
        R.write_wav(path=out / rel, q=q)
        rows.append(dict(path=rel, label=label, group=group, source=source, licence="test",
                         label_evidence="generated for a test", bandwidth_hz=bandwidth,
                         sample_rate_original=str(R.SR), language=language,
                         duration_s=f"{len(q) / R.SR:.3f}", music_level_db="-12" if "under" in rel else "",
                         original_file="", notes="tiny"))
    R.write_manifest(rows=rows[::-1], path=out / "manifest.csv")
    (out / "summary.md").write_text(R.summarize(rows=rows))
    R.write_sha256sums(root=out, files=[r["path"] for r in rows] + ["manifest.csv", "summary.md"],
                       path=out / "SHA256SUMS")
    return rows


def test_manifest_and_summary_of_tiny_wavs(tmp_path):
    rows = make_tiny_corpus(tmp_path)
    lines = (tmp_path / "manifest.csv").read_text().splitlines()
    assert lines[0] == ",".join(R.MANIFEST_COLUMNS)
    assert [line.split(",")[0] for line in lines[1:]] == sorted(r["path"] for r in rows)
    for row in rows:
        info = sf.info(str(tmp_path / row["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (R.SR, 1, "PCM_16")
    summary = (tmp_path / "summary.md").read_text()
    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in summary.splitlines()[2:7]}
    assert set(table) == set(R.LABELS)
    assert table["speech"][:5] == ["2", f"{3.5 / 60:.1f}", "1", "2", "2"]     # clips, min, sources, groups, languages
    assert table["speech"][5] == f"{1.5 / 60:.1f}"                            # the 4 kHz codec clip
    assert (tmp_path / "SHA256SUMS").read_text().count("\n") == len(rows) + 2


def test_manifest_refuses_unknown_labels_and_missing_groups(tmp_path):
    row = dict(path="a.wav", label="speech", group="g", source="s", duration_s="1", bandwidth_hz=4000)
    with pytest.raises(InputError, match="label"):
        R.write_manifest(rows=[dict(row, label="singing")], path=tmp_path / "m.csv")
    with pytest.raises(InputError, match="group"):
        R.write_manifest(rows=[dict(row, group="")], path=tmp_path / "m.csv")
    with pytest.raises(InputError, match="repeat"):
        R.write_manifest(rows=[row, row], path=tmp_path / "m.csv")


def test_offline_parts_are_deterministic(tmp_path):
    make_tiny_corpus(tmp_path / "one")
    make_tiny_corpus(tmp_path / "two")
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 9
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
    events = [(f"{i}.wav", tone_bursts(2.0, seed=i)) for i in range(12)]
    first = R.join_events(events, name="same", cutoff_hz=4000)
    again = R.join_events(events, name="same", cutoff_hz=4000)
    assert [(y.tobytes(), f) for y, f in first] == [(y.tobytes(), f) for y, f in again]


def test_derived_clips_are_chosen_by_fixed_rules(tmp_path):
    rows = [dict(path=f"speech/v{i:02d}.wav", label="speech", bandwidth_hz=11025, group=f"g{i % 3}")
            for i in range(12)] + [dict(path=f"music/m{i}.wav", label="music", bandwidth_hz=11025, group="m")
                                   for i in range(4)]
    jobs = B.derived_jobs(rows[::-1], out=tmp_path, settings={"codec_every": 3, "mix_every": 3,
                                                               "silence_clips_per_kind": 2})
    again = B.derived_jobs(rows, out=tmp_path, settings={"codec_every": 3, "mix_every": 3,
                                                          "silence_clips_per_kind": 2})
    assert jobs == again
    codecs = [j for j in jobs if j["rule"] == "codec" and j["row"]["label"] == "speech"]
    music_codecs = [j for j in jobs if j["rule"] == "codec" and j["row"]["label"] == "music"]
    assert [j["row"]["path"] for j in music_codecs] == ["music/m2.wav"]
    assert music_codecs[0]["codec"] in B.MUSIC_CODECS and not music_codecs[0]["codec"].startswith("codec2")
    mixes = [j for j in jobs if j["rule"] == "mix"]
    assert [j["row"]["path"] for j in codecs] == ["speech/v00.wav", "speech/v03.wav", "speech/v06.wav",
                                                  "speech/v09.wav"]
    assert len({j["codec"] for j in codecs}) == 4
    assert [j["level"] for j in mixes] == [-6.0, -12.0, -18.0, -6.0]
    assert sum(j["rule"] == "silence" for j in jobs) == 2 * len(R.SILENCE_KINDS)
