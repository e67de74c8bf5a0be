#!/usr/bin/env bash
# Run each named make target in turn, carry on after a failure, time each one, and end with one summary line
# `checks: N passed, N failed`; exit 1 if any failed. `make test` calls it with the list CHECKS in the Makefile.
set -u
MAKE=${MAKE:-make}
passed=0; failed=0; report=(); failures=()
t_all=$(date +%s)
for target in "$@"; do
  echo
  echo "==================== [$target] ===================="
  t0=$(date +%s)
  if $MAKE --no-print-directory "$target"; then
    passed=$((passed+1)); status=passed
  else
    failed=$((failed+1)); status=FAILED; failures+=("$target")
  fi
  dt=$(( $(date +%s) - t0 ))
  echo "==================== [$target] $status in ${dt} s"
  report+=("$(printf '%-14s %-7s %5d s' "$target" "$status" "$dt")")
done
echo
echo "==================== summary (total $(( $(date +%s) - t_all )) s)"
printf '  %s\n' "${report[@]}"
[ "$failed" -gt 0 ] && echo "  failed: ${failures[*]}"
echo "checks: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
