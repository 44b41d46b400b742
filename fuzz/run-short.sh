#!/usr/bin/env bash
# A short fuzz run of every cargo-fuzz target (README "Fuzzing"): builds them with nightly,
# replays the committed seeds (fuzz/seeds) and past crashes (fuzz/regressions), then fuzzes each
# for FUZZ_SECONDS (default 30). New inputs go to fuzz/corpus/<target> (not committed), a crash
# to fuzz/artifacts/<target>/ and fails the run. Prints executions per target.
#
#   fuzz/run-short.sh                     # every target, 30 s each
#   FUZZ_SECONDS=600 fuzz/run-short.sh    # longer
#   fuzz/run-short.sh receiver auth       # some targets
#
# Needs a nightly toolchain (rustup) and cargo-fuzz (installed here if missing, ~1 min).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
sanitizer="${FUZZ_SANITIZER:-address}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode envelope_codec auth receiver)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain (rustup toolchain install nightly); cargo-fuzz needs one" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    started=$SECONDS
    cargo install cargo-fuzz --locked
    echo "fuzz: cargo-fuzz installed in $((SECONDS - started)) s"
fi

started=$SECONDS
if [ $# -gt 0 ]; then
    for target in "${targets[@]}"; do cargo +nightly fuzz build --sanitizer "$sanitizer" "$target"; done
else
    cargo +nightly fuzz build --sanitizer "$sanitizer"
fi
echo "fuzz: built in $((SECONDS - started)) s"

failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    dirs=("fuzz/corpus/$target" "fuzz/seeds/$target")
    [ -d "fuzz/regressions/$target" ] && dirs+=("fuzz/regressions/$target")
    log="fuzz/artifacts/$target.log"
    mkdir -p fuzz/artifacts
    started=$SECONDS
    if cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        outcome=ok
    else
        outcome=CRASH
        failed+=("$target")
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    echo "fuzz: $target: $outcome, $execs executions in $((SECONDS - started)) s, corpus $corpus"
    if [ "$outcome" = CRASH ]; then
        grep -E 'panicked at|SUMMARY|Test unit written' "$log" | head -n 5 >&2
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}; inputs in fuzz/artifacts/, logs fuzz/artifacts/<target>.log" >&2
    exit 1
fi
