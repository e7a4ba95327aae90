#!/usr/bin/env bash
# Each binary that runs in a `provided.al2023` container must run on Amazon Linux 2023, whose
# glibc is 2.34. The local base image for `sam local` has a newer glibc and would hide a binary
# that needs more, so read the versioned symbols each one imports instead.
# Arguments: build directories (each */bootstrap in them) or binaries; default .aws-sam/build.
set -euo pipefail

MAX="${AL2023_GLIBC:-2.34}"
[ $# -gt 0 ] || set -- .aws-sam/build
binaries=()
shopt -s nullglob
for arg in "$@"; do
    if [ -d "$arg" ]; then
        binaries+=("$arg"/*/bootstrap)
    else
        binaries+=("$arg")
    fi
done
[ ${#binaries[@]} -gt 0 ] || { echo "no bootstraps under $*: run make sam-build first" >&2; exit 1; }

status=0
printf '%-28s %-12s %s\n' binary "needs glibc" "AL2023 ($MAX)"
for binary in "${binaries[@]}"; do
    [ -f "$binary" ] || { echo "$binary: not found" >&2; exit 1; }
    name=$(basename "$binary")
    [ "$name" = bootstrap ] && name=$(basename "$(dirname "$binary")")
    # A static binary imports no GLIBC_ symbol at all.
    needed=$( (objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' || true) | sed 's/GLIBC_//' | sort -uV | tail -n1)
    needed=${needed:-none}
    if [ "$needed" = none ] || [ "$(printf '%s\n%s\n' "$needed" "$MAX" | sort -V | tail -n1)" = "$MAX" ]; then
        verdict=ok
    else
        verdict="TOO NEW"
        status=1
    fi
    printf '%-28s %-12s %s\n' "$name" "$needed" "$verdict"
done
exit $status
