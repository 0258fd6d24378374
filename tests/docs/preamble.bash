# The docs test's preamble, put before every shell block (tests/docs/run.py; the rules are in
# docs/writing-docs.md). Its line count is subtracted when a failure is reported, and nothing
# here prints unless something fails.
set -eE -o pipefail
__docs_reported=
__docs_err() {
    # The block's own line: the outermost caller's, wherever the failure happened.
    local line=${BASH_LINENO[-2]}
    if [ -z "$__docs_reported" ]; then
        __docs_reported=1
        echo "__DOCS_FAILED__ script-line=$line status=$1" >&2
    fi
}
trap '__docs_err $?' ERR

# __docs_long COMMAND...: a command that runs until Ctrl-C. Start it, wait for its first line
# of output while it keeps running, stop it with SIGINT as Ctrl-C would; it must exit 0.
__docs_long() {
    local out pid status=0 tries=0
    out=$(mktemp "${TMPDIR:-/tmp}/docs-long.XXXXXX")
    "$@" >"$out" 2>&1 &
    pid=$!
    while [ ! -s "$out" ] && kill -0 "$pid" 2>/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -gt $((DOCS_READY_TIMEOUT * 10)) ]; then break; fi
        sleep 0.1
    done
    sleep 0.3
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" || status=$?
        cat "$out"
        echo "docs test: '$*' ended by itself (exit $status) instead of running until stopped" >&2
        return 1
    fi
    if [ ! -s "$out" ]; then
        kill -KILL "$pid"
        wait "$pid" || true
        echo "docs test: '$*' printed nothing in ${DOCS_READY_TIMEOUT} s" >&2
        return 1
    fi
    kill -INT "$pid"
    tries=0
    while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 100 ]; do
        tries=$((tries + 1))
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"
        wait "$pid" || true
        cat "$out"
        echo "docs test: '$*' still ran 10 s after SIGINT (Ctrl-C)" >&2
        return 1
    fi
    wait "$pid" || status=$?
    cat "$out"
    rm -f "$out"
    if [ "$status" -ne 0 ]; then
        echo "docs test: '$*' exited $status when stopped with SIGINT (Ctrl-C)" >&2
        return 1
    fi
}

# __docs_verdict COMMAND...: a command whose exit status is a verdict on the server
# (tls-check): 0 and 1 both pass; 2 (a usage or network error) fails.
__docs_verdict() {
    local status=0
    "$@" || status=$?
    if [ "$status" -gt 1 ]; then return "$status"; fi
}
