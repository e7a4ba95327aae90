#!/usr/bin/env bash
# Each built bootstrap must run on Amazon Linux 2023, whose glibc is 2.34. The local base image
# for `sam local` has a newer glibc and would hide a binary that needs more, so read the
# versioned symbols each bootstrap imports instead.
set -euo pipefail

MAX="${AL2023_GLIBC:-2.34}"
BUILD="${1:-.aws-sam/build}"
status=0
shopt -s nullglob
bootstraps=("$BUILD"/*/bootstrap)
[ ${#bootstraps[@]} -gt 0 ] || { echo "no bootstraps under $BUILD: run make sam-build first" >&2; exit 1; }
printf '%-28s %-12s %s\n' function "needs glibc" "AL2023 ($MAX)"
for bootstrap in "${bootstraps[@]}"; do
    name=$(basename "$(dirname "$bootstrap")")
    needed=$(objdump -T "$bootstrap" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
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
