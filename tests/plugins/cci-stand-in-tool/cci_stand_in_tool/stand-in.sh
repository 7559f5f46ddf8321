#!/bin/sh
# cci's stand-in AI tool: one history file per session in ~/.stand-in.
set -eu
mode=${1:-} id=${2:-}
history="$HOME/.stand-in/history-$id.txt"
mkdir -p "$HOME/.stand-in"
case "$mode" in
    --new) echo "started $id" >>"$history" ;;
    --resume)
        [ -f "$history" ] || { echo "stand-in: no session $id to resume" >&2; exit 3; }
        echo "resumed $id" >>"$history" ;;
    *) echo "usage: stand-in --new|--resume SESSION_ID" >&2; exit 2 ;;
esac
cat "$history"
while IFS= read -r line; do
    printf '%s\n' "$line" >>"$history"
    echo "noted: $line"
done
