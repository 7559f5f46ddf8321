#!/bin/sh
# cci's stand-in AI tool: one history file per session in ~/.stand-in.
set -eu
print=no json=no
[ "${1:-}" = --print ] && { print=yes; shift; }
mode=${1:-} id=${2:-}
[ "${3:-}" = --json ] && json=yes
history="$HOME/.stand-in/history-$id.txt"
mkdir -p "$HOME/.stand-in"
case "$mode" in
    --new) echo "started $id" >>"$history" ;;
    --resume)
        [ -f "$history" ] || { echo "stand-in: no session $id to resume" >&2; exit 3; }
        echo "resumed $id" >>"$history" ;;
    *) echo "usage: stand-in [--print] --new|--resume SESSION_ID [--json]" >&2; exit 2 ;;
esac
if [ "$print" = yes ]; then
    # headless: the prompt on stdin, each line noted and answered; 'exit N' sets the exit code, 'wait FILE'
    # waits (up to 2 minutes) for /workspace/FILE, 'stderr TEXT' writes TEXT to stderr
    code=0 lines=0
    while IFS= read -r line || [ -n "$line" ]; do
        printf 'prompt: %s\n' "$line" >>"$history"
        lines=$((lines + 1))
        case "$line" in
            "exit "*) code=${line#exit } ;;
            "stderr "*) echo "${line#stderr }" >&2 ;;
            "wait "*)
                [ "$json" = yes ] || echo "waiting for ${line#wait }"
                tries=0
                while [ ! -e "/workspace/${line#wait }" ] && [ "$tries" -lt 1200 ]; do
                    sleep 0.1
                    tries=$((tries + 1))
                done ;;
        esac
        [ "$json" = yes ] || echo "answer: $line"
    done
    [ "$json" = no ] || printf '{"session_id": "%s", "lines": %d, "exit_code": %d}\n' "$id" "$lines" "$code"
    exit "$code"
fi
cat "$history"
while IFS= read -r line; do
    printf '%s\n' "$line" >>"$history"
    echo "noted: $line"
done
