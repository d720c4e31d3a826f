#!/usr/bin/env bash
# Run tests under valgrind memcheck and fail on any memory error or definite leak whose
# stack passes through fastopt's compiled code.
#
#   tools/valgrind.sh                 # the representative subset below
#   tools/valgrind.sh tests/...       # any pytest arguments instead
#
# The whole suite would take hours under memcheck (code runs 20-50 times slower), so
# the default is a representative subset that reaches every kernel, every option
# branch and every error path of the compiled layer, in float64 only (float32 runs
# the same code paths through its own instantiation of the same source):
#   tests/test_optim.py and tests/test_kernels.py (every configuration of every
#   algorithm, sizes up to 2**16 + 3), and from tests/test_bad_inputs.py the
#   functional buffer battery, the aliasing cases and the legal-but-unusual inputs.
# The leak, thread, property and long-run tests are loops over the same calls.
# Build in place first (python setup.py build_ext --inplace); the build carries -g
# from Python's own CFLAGS, so reports name source lines.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
SUBSET=(tests/test_optim.py tests/test_kernels.py tests/test_bad_inputs.py -k
        "(test_optim or test_kernels or functional_rejects_bad_buffer or aliased or work) and not float32")
if [[ $# -gt 0 ]]; then SUBSET=("$@"); fi

log="${VALGRIND_LOG:-$(mktemp "${TMPDIR:-/tmp}/fastopt-valgrind.XXXXXX.log")}"
echo "valgrind: log in $log" >&2
# PYTHONMALLOC=malloc: without it CPython's small-object allocator hides Python
# allocations from memcheck and reads its own arenas in ways memcheck reports.
# The interpreter itself, not a wrapper script (pyenv shims) that memcheck would trace
# instead of Python.
python_bin="$(python -c 'import sys; print(sys.executable)')"
status=0
PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
    --errors-for-leak-kinds=definite --track-origins=no --num-callers=30 \
    --log-file="$log" "$python_bin" -m pytest -q -p no:cacheprovider "${SUBSET[@]}" || status=$?

python - "$log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
records, current = [], []
for line in text.splitlines():
    body = re.sub(r"^==\d+== ?", "", line)
    if body.strip():
        current.append(body)
    elif current:
        records.append(current)
        current = []
if current:
    records.append(current)
ours = re.compile(r"_kernels\.|kernels\.c|kernels_impl\.h|csrc/algos|fastopt\.h")
errors = [r for r in records if ours.search("\n".join(r)) and not r[0].startswith(
    ("HEAP SUMMARY", "LEAK SUMMARY", "ERROR SUMMARY", "For lists", "Memcheck", "Copyright",
     "Using Valgrind", "Command", "Parent PID"))]
leaks = [r for r in errors if "definitely lost" in r[0]]
print(f"valgrind: {len(errors)} error or leak records through fastopt "
      f"({len(leaks)} definite leaks)")
for record in errors[:20]:
    print("\n".join(record), end="\n\n")
for line in text.splitlines():
    if "ERROR SUMMARY" in line or "definitely lost:" in line:
        print("valgrind (whole process):", re.sub(r"^==\d+== ", "", line))
sys.exit(1 if errors else 0)
PY
report=$?
if [[ $status -ne 0 ]]; then echo "valgrind: pytest exited with $status" >&2; exit "$status"; fi
exit "$report"
