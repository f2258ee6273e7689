#!/usr/bin/env bash
# Checks build.sh without Docker: runs it the way the ClusterFuzzLite builder does, with $SRC,
# $OUT and $WORK pointed at scratch folders, then runs every fuzzer binary that appears in $OUT
# once over each input of its seed corpus (-runs=0). The fuzz stage of `cargo xtask test-all`
# runs it, so a broken build.sh fails CI here and not only on GitHub.
#
# Fails when build.sh fails; when a [[bin]] target of fuzz/Cargo.toml has no binary in $OUT;
# when a target with checked-in inputs has no seed corpus zip, or one with a dictionary has no
# $OUT/<target>.dict; when $OUT holds no binary; or when a binary fails on its seeds.
#
# Usage, from the repository root: .clusterfuzzlite/local_check.sh [SCRATCH]
# (default target/cflite-local). CFLITE_BUILD_SH runs another build script (the xtask's tests
# use it to show that broken scripts are caught).
set -euo pipefail

root=$(pwd)
build_sh=${CFLITE_BUILD_SH:-$root/.clusterfuzzlite/build.sh}
scratch=${1:-$root/target/cflite-local}
case "$scratch" in /*) ;; *) scratch=$root/$scratch ;; esac

fail() {
    echo "cflite local check FAILED: $*" >&2
    exit 1
}

rm -rf "$scratch"
mkdir -p "$scratch/src" "$scratch/out" "$scratch/work"
# The builder copies the repository to $SRC/refloop; a link lets the build reuse this checkout's
# cargo target directory.
ln -s "$root" "$scratch/src/refloop"
cp "$build_sh" "$scratch/src/build.sh"
export SRC=$scratch/src OUT=$scratch/out WORK=$scratch/work
export SANITIZER=${SANITIZER:-address} FUZZING_ENGINE=libfuzzer FUZZING_LANGUAGE=rust
export ARCHITECTURE=x86_64

echo "--> bash \$SRC/build.sh (SRC=$SRC OUT=$OUT WORK=$WORK SANITIZER=$SANITIZER)"
(cd "$SRC/refloop" && bash -eu "$SRC/build.sh") || fail "build.sh exited with status $?"

targets=$(awk '/^\[\[bin\]\]/ { bin = 1; next } /^\[/ { bin = 0 } bin && /^name *=/ { gsub(/[" ]/, "", $0); sub(/^name=/, "", $0); print }' fuzz/Cargo.toml)
[ -n "$targets" ] || fail "fuzz/Cargo.toml lists no [[bin]] target"
for target in $targets; do
    [ -x "$OUT/$target" ] || fail "build.sh put no binary for target $target in \$OUT"
    if [ -n "$(ls -A "fuzz/corpus/$target" "fuzz/regressions/$target" 2> /dev/null)" ]; then
        [ -f "$OUT/${target}_seed_corpus.zip" ] || fail "no \$OUT/${target}_seed_corpus.zip"
    fi
    if [ -f "fuzz/dict/$target.dict" ]; then
        [ -f "$OUT/$target.dict" ] || fail "no \$OUT/$target.dict"
    fi
done

unzip_to() {
    if command -v unzip > /dev/null; then
        unzip -q -o "$1" -d "$2"
    else
        python3 -m zipfile -e "$1" "$2"
    fi
}

binaries=0
for binary in "$OUT"/*; do
    name=$(basename "$binary")
    case "$name" in *.zip | *.dict | *.options) continue ;; esac
    [ -f "$binary" ] && [ -x "$binary" ] || continue
    seeds=$WORK/seeds/$name
    mkdir -p "$seeds"
    if [ -f "$OUT/${name}_seed_corpus.zip" ]; then
        unzip_to "$OUT/${name}_seed_corpus.zip" "$seeds"
    fi
    # With no seed inputs libFuzzer runs the empty input once, which still shows it starts.
    count=$(find "$seeds" -type f | wc -l)
    args=(-runs=0)
    [ -f "$OUT/$name.dict" ] && args+=("-dict=$OUT/$name.dict")
    echo "--> \$OUT/$name ${args[*]} ($count seed inputs)"
    (cd "$WORK" && "$binary" "${args[@]}" "$seeds") || fail "$name failed on its seed corpus"
    binaries=$((binaries + 1))
done
echo "@@stat cflite-binaries-run local $binaries"
[ "$binaries" -gt 0 ] || fail "no fuzzer binary in \$OUT"
