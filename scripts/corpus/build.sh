#!/usr/bin/env bash
# Build msc's training corpus (v2) from pinned Debian 12 packages: bash scripts/corpus/build.sh OUT
#
#   OUT/{speech,music,speech_over_music,silence,noise}/*.wav   mono, 22,050 Hz, 16-bit PCM
#   OUT/manifest.csv  OUT/summary.md  OUT/packages.csv  OUT/licenses/  OUT/SHA256SUMS  OUT/build.log
#   OUT/.cache/debs   the downloaded .deb files (kept: OFFLINE=1 rebuilds from them); OUT/.cache/x unpacked trees
#
# Needs: Debian 12 with apt (apt-get download needs no root), dpkg-deb, ffmpeg (built with libgsm,
# libcodec2, libmp3lame, libspeex, libopus: Debian's is), and the project's venv (bash scripts/setup.sh).
# Knobs: JOBS (default nproc; the output does not depend on it), OFFLINE=1 (no apt-get),
#        KEEP_UNPACKED=1 (keep OUT/.cache/x), EXCLUDED (default ../shared/data/EXCLUDED_SOURCES.md).
# The recipe (scripts/corpus/sources.toml) is checked against EXCLUDED_SOURCES.md first and the build
# stops on any overlap. Every .deb must match its pinned sha256.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:?usage: bash scripts/corpus/build.sh OUT}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
case "$OUT/" in "$REPO"/*)   # inside the repository only where git ignores it (e.g. runs/): never commit a corpus
  git -C "$REPO" check-ignore -q "$OUT" || { echo "ERROR: $OUT is inside the repository and not ignored by git"; exit 2; } ;;
esac
CACHE=$OUT/.cache
mkdir -p "$CACHE/debs"
PY=$REPO/.venv/bin/python
[ -x "$PY" ] || { echo "ERROR: $PY missing: run bash scripts/setup.sh first"; exit 2; }
for tool in ffmpeg ffprobe dpkg-deb; do command -v $tool >/dev/null || { echo "ERROR: $tool missing"; exit 2; }; done
EXCLUDED=${EXCLUDED:-$REPO/../shared/data/EXCLUDED_SOURCES.md}
exec > >(tee "$OUT/build.log") 2>&1
T0=$(date +%s)
echo "output $OUT; ffmpeg $(dpkg-query -W -f='${Version}' ffmpeg 2>/dev/null || echo '?') (built with 7:5.1.9-0+deb12u1)"

cd "$REPO"
"$PY" -m scripts.corpus.build --list-debs --excluded "$EXCLUDED" > "$CACHE/debs.lst"   # stops on an overlap
if [ "${OFFLINE:-0}" != 1 ]; then
  chmod 777 "$CACHE/debs"   # apt-get download drops privileges to _apt where it can
  while read -r spec sha; do
    name=${spec%%=*}; version=${spec#*=}
    file=$(ls "$CACHE/debs/${name}_"*.deb 2>/dev/null | while read -r f; do
             [ "$(dpkg-deb -f "$f" Version)" = "$version" ] && echo "$f"; done | head -1 || true)  # none yet: ls fails
    if [ -n "$file" ] && [ "$(sha256sum "$file" | cut -c1-64)" = "$sha" ]; then continue; fi
    (cd "$CACHE/debs" && apt-get download -q "$spec")
  done < "$CACHE/debs.lst"
fi
T1=$(date +%s)
echo "downloads: $(du -sh "$CACHE/debs" | cut -f1) in $(ls "$CACHE"/debs/*.deb | wc -l) .deb files, $((T1 - T0)) s"
"$PY" -m scripts.corpus.build "$OUT" --cache "$CACHE" --jobs "${JOBS:-$(nproc)}" --excluded "$EXCLUDED"
T2=$(date +%s)
[ "${KEEP_UNPACKED:-0}" = 1 ] || rm -rf "$CACHE/x"
echo "conversion: $((T2 - T1)) s; total: $((T2 - T0)) s"
echo "corpus size: $(du -sh --exclude=.cache "$OUT" | cut -f1); cache: $(du -sh "$CACHE" | cut -f1)"
