#!/usr/bin/env bash
# The README's Reliability figures in one run at one commit:
#   npm run bench:reliability            (builds first; ~20 min with the 10-min soak)
#   SOAK_DURATION=2m npm run bench:reliability   (a shorter soak)
# Each step's whole output goes to bench/results/reliability-<UTC time>/<step>.log,
# and summary.md there names the commit, whether the tree was clean, the load,
# and each step's exit status and the lines that carry its figures.
# Steps run one after another (never two at once: they measure a 2-core machine).
set -uo pipefail
cd "$(dirname "$0")/.."

stamp=$(date -u +%Y-%m-%dT%H-%M-%SZ)
out="bench/results/reliability-$stamp"
mkdir -p "$out"
summary="$out/summary.md"
commit=$(git rev-parse HEAD)
if [ -z "$(git status --porcelain --untracked-files=no)" ]; then tree=clean; else tree=dirty; fi

{
  echo "# Reliability run $stamp"
  echo
  echo "Commit \`$commit\` (work tree: $tree) · $(nproc) cores · $(node --version) · load at start $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} >"$summary"

# step NAME GREP-PATTERN COMMAND...: runs COMMAND, logs it, and copies the
# lines matching GREP-PATTERN (its figures) into the summary.
step() {
  local name=$1 pattern=$2
  shift 2
  local started=$SECONDS
  echo "== $name: $*" >&2
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  {
    echo "## $name"
    echo
    echo "\`$*\` → exit $rc in $((SECONDS - started)) s"
    echo
    echo '```'
    grep -E "$pattern" "$out/$name.log" | tail -n 40
    echo '```'
    echo
  } >>"$summary"
  return 0
}

run_test() { env ESTARGZ_LOG_LEVEL=error "$@"; }
node_test='node --test --test-reporter=spec'

step faults '# foreground|# background|^# (pass|fail)|✖' run_test FAULT_PASSES=15 $node_test dist/test/e2e/faults.test.js
step fuzz 'cases|crash|hang|unverified|refused|opened|reads' node dist/scripts/fuzz.js --cases "${FUZZ_CASES:-5000}" --seed "${FUZZ_SEED:-20261206}"
step crash '^# (pass|fail)|✖|✔' run_test $node_test dist/test/e2e/disk-cache-crash.test.js
step restart '^# (pass|fail)|✖|✔|passes|restart|kill|slow reads|restarts in|stopped' run_test $node_test dist/test/e2e/restart.test.js
step auth-helper 'median|p90|per call|\|' node dist/bench/auth-helper.js
step soak 'p99|max|RSS|fds|errors|wrong|cold|warm|preads|\|' node dist/bench/soak.js --duration "${SOAK_DURATION:-10m}"

echo "Load at the end $(cut -d' ' -f1-3 /proc/loadavg)." >>"$summary"
echo "$summary"
