#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer) over every parser of untrusted input wirelab owns.
# The targets live in fuzz/ (its own workspace, outside the root build); their seeds in
# fuzz/seeds/<target>/.
#
#   bash scripts/fuzz.sh smoke           build every target, run each ~20 s from its seeds
#   bash scripts/fuzz.sh long SECONDS    run each target for SECONDS (at most 10M executions)
#   bash scripts/fuzz.sh build           only build
#   bash scripts/fuzz.sh list            the targets
#
# Each target runs from a fresh copy of its seeds plus its corpus (fuzz/corpus/<target>, kept
# between runs, git-ignored); a crash leaves its input in fuzz/artifacts/<target>/ and fails the
# script, naming the target. One summary line per target gives the executions (libFuzzer's final
# stat::number_of_executed_units), the time, the corpus size (libFuzzer's: inputs/bytes) and the
# number of files in fuzz/corpus/<target>. libFuzzer's full output is in fuzz/artifacts/<target>.log.
#
# Environment: FUZZ_TARGETS="a b" runs only those; FUZZ_NICE=10 runs under nice -n 10;
# FUZZ_SANITIZER (default address) is passed to cargo fuzz as --sanitizer; FUZZ_RUNS caps the
# executions of a long run (default 10000000); FUZZ_RSS_MB (default 2048) libFuzzer's -rss_limit_mb.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
fuzz_dir="$root/fuzz"
cd "$root"

mode="${1:-smoke}"
sanitizer="${FUZZ_SANITIZER:-address}"
nice_cmd=()
if [[ -n "${FUZZ_NICE:-}" ]]; then
    nice_cmd=(nice -n "$FUZZ_NICE")
fi

targets() {
    if [[ -n "${FUZZ_TARGETS:-}" ]]; then
        printf '%s\n' $FUZZ_TARGETS
    else
        sed -n 's/^name = "\(.*\)"$/\1/p' "$fuzz_dir/Cargo.toml" | grep -v '^wirelab-fuzz$'
    fi
}

ensure_tools() {
    if ! rustup toolchain list | grep -q '^nightly'; then
        echo "fuzz.sh: needs a nightly toolchain: rustup toolchain install nightly" >&2
        exit 2
    fi
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "fuzz.sh: installing cargo-fuzz" >&2
        cargo install cargo-fuzz --locked
    fi
}

build() {
    ensure_tools
    "${nice_cmd[@]}" cargo +nightly fuzz build --fuzz-dir "$fuzz_dir" --sanitizer "$sanitizer"
}

# run TARGET SECONDS RUNS: prints the summary line; returns non-zero on a crash.
run_one() {
    local t="$1" secs="$2" runs="$3"
    local corpus="$fuzz_dir/corpus/$t" seeds="$fuzz_dir/seeds/$t"
    local artifacts="$fuzz_dir/artifacts/$t/"
    local log="$fuzz_dir/artifacts/$t.log"
    mkdir -p "$corpus" "$artifacts"
    local dirs=("$corpus")
    if [[ -d "$seeds" ]]; then
        dirs+=("$seeds")
    fi
    local start end rc=0
    start=$(date +%s)
    # libFuzzer writes new inputs into the first directory only: the seeds stay untouched.
    "${nice_cmd[@]}" cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" --sanitizer "$sanitizer" \
        "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -runs="$runs" -print_final_stats=1 \
        -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -artifact_prefix="$artifacts" \
        >"$log" 2>&1 || rc=$?
    end=$(date +%s)
    local execs corp files
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    # libFuzzer's own corpus at the end (inputs/bytes), and the files kept in fuzz/corpus.
    corp=$(grep -oE 'corp: [0-9]+/[0-9]+(b|Kb|Mb)' "$log" | tail -n 1 | cut -d' ' -f2)
    files=$(find "$corpus" -type f | wc -l)
    if [[ $rc -ne 0 ]]; then
        printf '%-16s CRASH   execs=%-10s time=%ss corpus=%s files=%s log=%s\n' \
            "$t" "${execs:-?}" "$((end - start))" "${corp:-?}" "$files" "${log#"$root"/}"
        grep -E '^(==[0-9]+==|SUMMARY|thread .* panicked|.*Test unit written)' "$log" | head -n 8 >&2 || true
        return 1
    fi
    printf '%-16s ok      execs=%-10s time=%ss corpus=%s files=%s\n' \
        "$t" "${execs:-?}" "$((end - start))" "${corp:-?}" "$files"
}

run_all() {
    local secs="$1" runs="$2" failed=()
    build
    local t
    for t in $(targets); do
        run_one "$t" "$secs" "$runs" || failed+=("$t")
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        echo "fuzz.sh: crash in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
        exit 1
    fi
}

case "$mode" in
    smoke)
        run_all 20 -1
        ;;
    long)
        secs="${2:?usage: fuzz.sh long SECONDS}"
        run_all "$secs" "${FUZZ_RUNS:-10000000}"
        ;;
    build)
        build
        ;;
    list)
        targets
        ;;
    *)
        echo "usage: fuzz.sh smoke | long SECONDS | build | list" >&2
        exit 2
        ;;
esac
