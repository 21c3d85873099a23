#!/bin/sh
# Run the test suite while 3 processes burn CPU (tests must wait for events, not for time).
#
#   scripts/test_under_load.sh                      # the whole suite, 3 rounds in a row
#   MMX_ROUNDS=1 scripts/test_under_load.sh tests/test_serve.py -x
#
# Arguments go to pytest. MMX_BURNERS (default 3) busy loops run at normal priority for the
# whole run, so on a 2-core machine every test shares its cores with more than two busy
# processes; MMX_ROUNDS (default 3) runs pytest that many times and stops at the first
# failing round. The burners' pids are in MMX_BURNER_PIDS for the tests' own eyes, and
# they are killed on exit, Ctrl-C included. PY names the Python (default .venv/bin/python,
# else python3).
set -u
burners=${MMX_BURNERS:-3}
rounds=${MMX_ROUNDS:-3}
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
pids=""
stop_burners() {
    for pid in $pids; do kill "$pid" 2>/dev/null; done
    for pid in $pids; do wait "$pid" 2>/dev/null; done
    pids=""
}
trap 'stop_burners; exit 130' INT TERM
trap 'stop_burners' EXIT
i=0
while [ "$i" -lt "$burners" ]; do
    (trap - INT TERM; while :; do :; done) &
    pids="$pids $!"
    i=$((i + 1))
done
MMX_BURNER_PIDS=$(echo $pids)
export MMX_BURNER_PIDS
echo "test_under_load: $burners CPU burners (pids $MMX_BURNER_PIDS) on $(getconf _NPROCESSORS_ONLN 2>/dev/null || echo '?') cores, $rounds round(s)" >&2
round=1
while [ "$round" -le "$rounds" ]; do
    echo "test_under_load: round $round of $rounds" >&2
    "$PY" -m pytest "$@"
    status=$?
    if [ "$status" -ne 0 ]; then
        echo "test_under_load: round $round failed (pytest exit $status)" >&2
        exit "$status"
    fi
    round=$((round + 1))
done
echo "test_under_load: $rounds round(s) passed under load" >&2
