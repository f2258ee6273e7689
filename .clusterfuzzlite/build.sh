#!/bin/bash -eu
# Builds every cargo-fuzz target of refloop for ClusterFuzzLite (or OSS-Fuzz) and copies each
# one into $OUT the OSS-Fuzz way: the binary as $OUT/<target>, its libFuzzer dictionary as
# $OUT/<target>.dict, and its checked-in inputs (fuzz/corpus/<target> and
# fuzz/regressions/<target>) as $OUT/<target>_seed_corpus.zip.
#
# The builder runs this from $SRC/refloop. `.clusterfuzzlite/local_check.sh` runs it without
# Docker, with $SRC, $OUT and $WORK in scratch folders, in `cargo xtask test-all`'s fuzz stage.

cd "$SRC/refloop"

# -O builds optimised; --debug-assertions keeps the overflow and debug checks the fuzz stage
# runs with (and, being the same flags, lets a local run reuse that stage's build).
cargo fuzz build -O --debug-assertions

target_dir="${CARGO_TARGET_DIR:-fuzz/target}"
release="$target_dir/x86_64-unknown-linux-gnu/release"

# The targets are the [[bin]] names in fuzz/Cargo.toml.
targets=$(awk '/^\[\[bin\]\]/ { bin = 1; next } /^\[/ { bin = 0 } bin && /^name *=/ { gsub(/[" ]/, "", $0); sub(/^name=/, "", $0); print }' fuzz/Cargo.toml)

zip_dir() {
    # zip -j when it is installed (the builder image has it), else Python's zipfile.
    local zipfile=$1
    shift
    if command -v zip > /dev/null; then
        zip -q -j "$zipfile" "$@"
    else
        python3 -m zipfile -c "$zipfile" "$@"
    fi
}

for target in $targets; do
    cp "$release/$target" "$OUT/$target"
    if [ -f "fuzz/dict/$target.dict" ]; then
        cp "fuzz/dict/$target.dict" "$OUT/$target.dict"
    fi
    seeds=()
    for dir in "fuzz/corpus/$target" "fuzz/regressions/$target"; do
        if [ -d "$dir" ]; then
            for file in "$dir"/*; do
                [ -f "$file" ] && seeds+=("$file")
            done
        fi
    done
    if [ ${#seeds[@]} -gt 0 ]; then
        rm -f "$OUT/${target}_seed_corpus.zip"
        zip_dir "$OUT/${target}_seed_corpus.zip" "${seeds[@]}"
    fi
done
