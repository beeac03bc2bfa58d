#!/usr/bin/env bash
# Prints one table of every goal the benches reported in the log they
# wrote (`make bench`): each bench prints a line
#   GOAL<TAB>figure<TAB>goal<TAB>measured<TAB>met|missed
# next to its own output. Exits 1 when the log holds no goal line (a bench
# that stopped printing them would otherwise go unnoticed); a missed goal
# is reported, not an error: `make bench` measures, it does not gate.
# Widths count bytes (mawk): keep the fields ASCII so the columns line up.
set -euo pipefail

log=${1:?usage: tools/bench/table.sh BENCH_LOG}
[[ -r $log ]] || { echo "bench table: no log at $log (run make bench)" >&2; exit 1; }

rows=$(awk -F'\t' '$1 == "GOAL" && NF == 5' "$log")
if [[ -z $rows ]]; then
    echo "bench table: $log has no GOAL lines; did every bench run?" >&2
    exit 1
fi

echo
echo "=== make bench: every goal ==="
awk -F'\t' '
    BEGIN { w[1] = length("figure"); w[2] = length("goal"); w[3] = length("measured") }
    { for (i = 2; i <= 4; i++) if (length($i) > w[i - 1]) w[i - 1] = length($i); row[NR] = $0 }
    END {
        fmt = "%-" w[1] "s  %-" w[2] "s  %-" w[3] "s  %s\n"
        printf fmt, "figure", "goal", "measured", ""
        for (r = 1; r <= NR; r++) {
            split(row[r], f, "\t")
            printf fmt, f[2], f[3], f[4], f[5]
            if (f[5] == "met") met++; else missed++
        }
        printf "%d met, %d missed\n", met, missed
    }' <<<"$rows"
