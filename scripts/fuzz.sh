#!/usr/bin/env bash
# Runs every Go fuzz target of the repository (each `func FuzzXxx(f
# *testing.F)` in a _test.go file) for FUZZTIME with one worker, one
# target after another, then prints one line per target: its package,
# the executions, the new interesting inputs and the corpus size (go's
# last "fuzz: elapsed: …, execs: N (…/sec), new interesting: M (total: K)"
# line) and the result. Exits non-zero if a target found a crash (go
# writes the input to testdata/fuzz/<Name>/ in the target's package: keep
# it as a regression seed once fixed) or could not run.
#
#   FUZZTIME=30s          time per target (go's -fuzztime: 30s, or 1000x)
#   FUZZMINIMIZETIME=100x go's -fuzzminimizetime. Go minimizes every new
#                         interesting input, for up to 60 s by default,
#                         which would eat a short run of the slower device
#                         targets whole.
#   FUZZ='Blk|Net'        only the targets whose name matches this regex
#   GO=go                 the go command
#
# `make fuzz` runs it. Never more than one worker (-parallel 1): the dev
# machine has 2 CPUs and runs nested QEMU tests beside it.
set -u
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-100x}
FUZZ=${FUZZ:-.}
logs=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-fuzz.XXXXXX")

# "<package dir> <Name>" for every target, sorted.
mapfile -t targets < <(grep -rEo --include='*_test.go' \
	--exclude-dir=.git --exclude-dir=build --exclude-dir=bin --exclude-dir=testdata --exclude-dir=node_modules \
	'^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . |
	sed -E 's|^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*|\1 \2|' | sort -u | awk -v re="$FUZZ" '$2 ~ re')
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz.sh: no fuzz target matches '$FUZZ'" >&2
	exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, $FUZZTIME each, logs in $logs"

crashes=0
failures=0
rows=()
for t in "${targets[@]}"; do
	dir=${t% *}
	name=${t#* }
	log="$logs/$name.log"
	echo "--- $name (./$dir)"
	"$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" \
		-parallel 1 "./$dir" >"$log" 2>&1
	rc=$?
	stats=$(grep -E '^fuzz: elapsed: .*execs: [0-9]+ .*new interesting: [0-9]+ \(total: [0-9]+\)' "$log" | tail -1)
	execs=$(sed -E 's/.*execs: ([0-9]+) .*/\1/' <<<"$stats")
	new=$(sed -E 's/.*new interesting: ([0-9]+) .*/\1/' <<<"$stats")
	total=$(sed -E 's/.*\(total: ([0-9]+)\).*/\1/' <<<"$stats")
	if [ -z "$stats" ]; then
		execs=0 new=0
		total=$(grep -Eo 'baseline coverage: [0-9]+/[0-9]+' "$log" | tail -1 | sed -E 's|.*/||')
		total=${total:-0}
	fi
	if [ $rc -eq 0 ]; then
		result=ok
	elif grep -qE 'Failing input written to|failure while testing seed corpus entry' "$log"; then
		result="CRASH $(grep -Eo 'testdata/fuzz/[^ ]+|seed corpus entry: [^ ]+' "$log" | head -1)"
		crashes=$((crashes + 1))
	elif grep -qx '    context deadline exceeded' "$log" && ! grep -qE '^panic:|--- FAIL: .*/' "$log"; then
		# Go 1.26's coordinator can report its own -fuzztime deadline as a
		# failure (go.dev/issue/75804, fixed in 1.27): no input failed.
		result="ok (go deadline race, go.dev/issue/75804)"
	else
		result="FAILED (see $log)"
		failures=$((failures + 1))
	fi
	if [ "${result%% *}" != ok ]; then
		grep -vE '^fuzz: elapsed' "$log" | head -40 | sed 's/^/    /'
	fi
	rows+=("$(printf '%-26s %-30s %10s %6s %7s  %s' "$name" "./$dir" "$execs" "$new" "$total" "$result")")
done

echo
printf '%-26s %-30s %10s %6s %7s  %s\n' TARGET PACKAGE EXECS NEW CORPUS RESULT
printf '%s\n' "${rows[@]}"
echo "fuzz.sh: ${#targets[@]} targets, $crashes crashed, $failures failed to run (FUZZTIME=$FUZZTIME; logs in $logs)"
[ $crashes -eq 0 ] && [ $failures -eq 0 ]
