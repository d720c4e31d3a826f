#!/usr/bin/env bash
# Build fastopt with AddressSanitizer and UndefinedBehaviorSanitizer in a scratch copy of
# the source tree and run the test suite against that build.
#
#   tools/sanitize.sh                  # the whole default suite
#   tools/sanitize.sh -m slow          # any pytest arguments select what runs
#   FASTOPT_SCRATCH=dir tools/sanitize.sh   # keep the scratch build in `dir`
#
# The scratch copy keeps the sanitized extension out of the working tree, so the
# in-place build there stays the optimized one.  Any sanitizer report aborts the run
# (-fno-sanitize-recover=all, halt_on_error), so a clean exit status means a clean run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${FASTOPT_SCRATCH:-}" ]]; then
    scratch="$FASTOPT_SCRATCH"
    mkdir -p "$scratch"
else
    scratch="$(mktemp -d "${TMPDIR:-/tmp}/fastopt-sanitize.XXXXXX")"
    trap 'rm -rf "$scratch"' EXIT
fi

# Tracked files and untracked ones git does not ignore: the sources, never build outputs.
(cd "$root" && git ls-files --cached --others --exclude-standard -z \
    | while IFS= read -r -d '' path; do [[ -f "$path" ]] && printf '%s\0' "$path"; done \
    | xargs -0 cp --parents -t "$scratch")

cd "$scratch"
rm -rf build fastopt/_kernels.c fastopt/_kernels*.so
echo "sanitize: building in $scratch" >&2
FASTOPT_SANITIZE=address,undefined CFLAGS="-fno-sanitize-recover=all" \
    python setup.py build_ext --inplace >build.log 2>&1 || { cat build.log >&2; exit 1; }

# Python itself is not built with ASan: its runtime must be loaded first.  Leak
# detection is off because the interpreter keeps objects alive until exit by design
# (tools/valgrind.sh looks for leaks instead); PYTHONMALLOC=malloc sends every Python
# allocation through the sanitizer's malloc, so overruns into them are caught too.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
# Stack use-after-return detection is off: it moves stack frames to ASan's "fake
# stack", whose frames are not 64-byte aligned, and GCC gives the AVX-512 kernels'
# local arrays 64-byte alignment for 512-bit moves, so the detector itself faults
# there (a normal build realigns the stack).  No pointer to a kernel's locals escapes.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONMALLOC=malloc
python -c "import fastopt._kernels as k, sys; print('sanitize: testing', k.__file__, file=sys.stderr)"
# Two files are left out: with the ASan runtime preloaded, importing matplotlib (which
# the compare command's plot uses when installed) and initializing jax (which optax
# imports) abort inside those libraries, with no sanitizer report.  The compare command
# is pure Python over kernels the rest of the suite covers; test_optax only compares
# results with optax.
python -m pytest -q -p no:cacheprovider --ignore=tests/test_compare.py \
    --ignore=tests/test_optax.py "$@"
