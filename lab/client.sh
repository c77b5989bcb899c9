#!/bin/bash
# The lab's client: waits for the path and the server, runs the experiment asked for in the
# environment, and leaves results, report.md and charts in /results/lab-<date>-<time> (the
# host's results/). Environment (docker-compose.yml passes it through, with defaults):
#   EXPERIMENT  run | hol | resume | check   (run)
#   LINK        the router's link, as for `wirelab run --link`   (rtt=40ms,loss=1%)
#   SEED        seed of the loss processes    (1)
#   TRANSPORTS  comma-separated               (all)
#   SCENARIOS   comma-separated scenario names (or .toml paths); else SET = quick | default |
#               full; else the lab's set: echo_64B_c1_shared (100 echoes) and setup_1rtt
#   REPS        repetitions                   (6)
#   HOL_ARGS    extra arguments for `wirelab hol` (default: --quick)
#   RESUME_ARGS extra arguments for `wirelab resume` (default: --kinds cut,window,dark,migrate
#               --reps 3; restart needs a local server and is left out)
#   OUT         directory name under /results (lab-<UTC date>-<time>)
set -euo pipefail
S=${SERVER_ADDR:-198.19.0.100}
R=${ROUTER_ADDR:-198.18.0.2}
LINK=${LINK:-rtt=40ms,loss=1%}
SEED=${SEED:-1}
EXPERIMENT=${EXPERIMENT:-run}
REPS=${REPS:-6}
SET=${SET:-}
LAB_SET=/usr/local/share/wirelab/scenarios/echo_64B_c1_shared.toml,setup_1rtt

wait_for() { # wait_for WHAT TRIES COMMAND...
    local what=$1 tries=$2; shift 2
    for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "client: $what did not come up" >&2; return 1
}
wait_for "the path to $S through the router" 150 ping -c 1 -W 1 "$S"
wait_for "the server's control endpoint $S:7799" 150 timeout 1 bash -c "</dev/tcp/$S/7799"
wait_for "the router's control endpoint $R:7798" 150 timeout 1 bash -c "</dev/tcp/$R/7798"

stamp=$(date -u +%Y%m%d-%H%M%S)
out=/results/${OUT:-lab-$stamp}
mkdir -p "$out"
case "$LINK" in *seed=*) ;; *) LINK="$LINK,seed=$SEED" ;; esac
echo "client: experiment $EXPERIMENT, link $LINK, results in ${out#/}" >&2

rc=0
case "$EXPERIMENT" in
run)
    args=(run --server "$S" --router "$R" --link "$LINK" --reps "$REPS" --out "$out")
    [ -n "${TRANSPORTS:-}" ] && args+=(--transports "$TRANSPORTS")
    if [ -n "${SCENARIOS:-}" ]; then args+=(--scenario "$SCENARIOS")
    elif [ "$SET" = quick ]; then args+=(--quick)
    elif [ "$SET" = full ]; then args+=(--full)
    elif [ "$SET" != default ]; then args+=(--scenario "$LAB_SET")
    fi
    wirelab "${args[@]}" || rc=$?
    ;;
hol)
    # shellcheck disable=SC2086
    wirelab hol --server "$S" --router "$R" --seed "$SEED" --out "$out" ${HOL_ARGS:---quick} || rc=$?
    ;;
resume)
    # shellcheck disable=SC2086
    wirelab resume --server "$S" --router "$R" --link "$LINK" --out "$out" \
        ${RESUME_ARGS:---kinds cut,window,dark,migrate --reps 3} || rc=$?
    ;;
check)
    wirelab link check --router "$R" --peer "$S" ${CHECK_ARGS:---quick} | tee "$out/check.md" || rc=$?
    ;;
*)
    echo "client: EXPERIMENT must be run, hol, resume or check (not '$EXPERIMENT')" >&2; exit 2 ;;
esac
wirelab link router-stats "$R" > "$out/router.json" || rc=$?
[ -z "${RESULTS_UID:-}" ] || chown -R "$RESULTS_UID" "$out" || true
echo "client: results in results/${out#/results/} (exit $rc)" >&2
exit "$rc"
