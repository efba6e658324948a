#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) one after another, then
# prints one summary line per target from libFuzzer's final stats.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Each target starts from fuzz/seeds/<target> (kept in the repository) and
# grows fuzz/corpus/<target> (ignored by git); crashing inputs land in
# fuzz/artifacts/<target>/, each run's output in fuzz/logs/<target>.log.
# Builds use CARGO_BUILD_JOBS (default 1) and everything runs at nice NICE
# (default 19), so a run can go on beside other work.
set -u
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls fuzz_targets | sed -n 's/\.rs$//p')
fi
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
niceness="${NICE:-19}"
mkdir -p logs corpus

nice -n "$niceness" cargo +nightly fuzz build || exit 1

summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target"
    log="logs/$target.log"
    echo "== $target: ${seconds}s (log: fuzz/$log)"
    started=$SECONDS
    nice -n "$niceness" cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        >"$log" 2>&1
    status=$?
    elapsed=$((SECONDS - started))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corpus=$(find "corpus/$target" -type f | wc -l)
    crash=no
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ "$status" -ne 0 ] || [ -n "$artifact" ]; then
        crash="yes (exit $status${artifact:+, $artifact})"
    fi
    line=$(printf '%-22s %6ss  execs %-11s exec/s %-7s cov %-6s ft %-7s corpus %-6s crash %s' \
        "$target" "$elapsed" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "$crash")
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
