"""Scale: element counts past 2**31 work, and every loop over elements counts in 64 bits.

The big test runs plain SGD on 2**31 + 2**22 + 17 float32 elements (an 8.6 GB
parameter).  The gradient is allocated zeroed and written only in three windows -- the
start, across the 2**31 boundary and the end -- so its untouched pages stay the
kernel's shared zero page and the run needs about one parameter's worth of memory, not
two (8.5 GB peak resident measured).  An index that wrapped at 2**31 would stop short
of the boundary window or the end window, or write below the start of the array.
"""
import pathlib
import re

import numpy as np
import pytest

import fastopt

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIG = 2**31 + 4 * 2**20 + 17  # past 2**31, room for the windows, an odd tail
WINDOW = 2**20


def available_bytes():
    """MemAvailable from /proc/meminfo, or None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.mark.slow
def test_sgd_on_more_than_2_31_float32_elements():
    needed = BIG * 4 + 6 * WINDOW * 4  # the parameter, written in full; three gradient windows
    available = available_bytes()
    if available is None or available < 2 * needed:
        pytest.skip(f"needs {2 * needed / 2**30:.1f} GiB available memory, "
                    f"have {(available or 0) / 2**30:.1f} GiB")
    param = np.zeros(BIG, np.float32)
    grad = np.zeros(BIG, np.float32)
    windows = [slice(0, WINDOW), slice(2**31 - WINDOW, 2**31 + WINDOW), slice(BIG - WINDOW, BIG)]
    rng = np.random.default_rng(0)
    for window in windows:
        grad[window] = rng.standard_normal(window.stop - window.start).astype(np.float32) + 2
    fastopt.SGD([param], lr=0.5).step([grad])
    for window in windows:
        expected = np.float32(0) + np.float32(-0.5) * grad[window]
        assert param[window].tobytes() == expected.tobytes(), window
    # between the windows the gradient is zero and the parameter stays zero
    for index in (WINDOW, 2**30, 2**31 - WINDOW - 1, 2**31 + WINDOW, BIG - WINDOW - 1):
        assert param[index] == 0, index
    assert param[-1] != 0 and param[2**31] != 0


# -- 64-bit indices everywhere ------------------------------------------------------------

WIDE = {"int64_t", "ptrdiff_t", "size_t", "Py_ssize_t", "npy_intp", "uint64_t"}
C_FOR = re.compile(r"for\s*\(\s*(?:const\s+)?([A-Za-z_]\w*)\s+([A-Za-z_]\w*)\s*=([^;]*);"
                   r"\s*([^;]*);")
# What an element count or position is called in the kernels and the runner.
ELEMENTS = re.compile(r"\b(begin|end|n|size|count|ntasks|nelem)\b|->n\b|\.n\b")
PYX_CDEF = re.compile(r"cdef\s+(?:unsigned\s+)?(int|long|short|char|unsigned)\s+([^=\n]+)")
PYX_FOR = re.compile(r"for\s+(\w+)\s+in\s+range\(([^\n]*)\)\s*:")


def _counts_elements(var, start, condition):
    """Whether a loop index starts at or is compared directly with an element count
    (a narrow index that only counts lanes or table entries is fine)."""
    compared = re.match(rf"\s*{var}\s*(<=|<|!=|>=|>)\s*(.*)", condition)
    return bool(ELEMENTS.search(start) or (compared and ELEMENTS.search(compared.group(2))))


def c_sources():
    return sorted(list((ROOT / "csrc").rglob("*.c")) + list((ROOT / "csrc").rglob("*.h")))


def test_c_loops_over_elements_use_64_bit_indices():
    narrow = []
    for path in c_sources():
        text = path.read_text()
        for kind, var, start, condition in C_FOR.findall(text):
            if kind not in WIDE and _counts_elements(var, start, condition):
                narrow.append(f"{path.relative_to(ROOT)}: for ({kind} {var} ...; {condition})")
    assert not narrow, "loops with narrow indices:\n" + "\n".join(narrow)
    assert len(c_sources()) > 0


def test_kernel_abi_passes_element_ranges_as_int64():
    header = (ROOT / "csrc" / "fastopt.h").read_text()
    assert re.search(r"int64_t\s+begin,\s*int64_t\s+end", header)
    assert re.search(r"int64_t\s+n;", header)
    kernel = re.compile(r"FN\(\w+\)\(char \*const \*buf,\s*(\w+)\s+begin,\s*(\w+)\s+end")
    found = 0
    for path in c_sources():
        for match in kernel.finditer(path.read_text()):
            assert match.groups() == ("int64_t", "int64_t"), path.name
            found += 1
    assert found >= len(list((ROOT / "csrc" / "algos").glob("*.h"))), "a kernel not found"


def narrow_pyx_loops(text):
    """``for v in range(bound)`` loops whose `v` its function declares as a C int or
    narrower and whose bound is an element count (a buffer or dimension count is fine)."""
    found, narrow = [], set()
    for line in text.splitlines():
        if re.match(r"\s*(?:def|cdef|cpdef)\b[^=]*\(", line):
            narrow = set()  # a new function: its own declarations
        declared = PYX_CDEF.match(line.strip())
        if declared:
            narrow |= {n.strip().split()[0].lstrip("*") for n in declared.group(2).split(",")
                       if n.strip()}
        for var, bound in PYX_FOR.findall(line):
            if var in narrow and (ELEMENTS.search(bound) or "SIZE" in bound
                                  or "nbytes" in bound):
                found.append(line.strip())
    return found


def test_pyx_loops_use_wide_indices():
    pyx = sorted((ROOT / "fastopt").glob("*.pyx"))
    assert pyx
    for path in pyx:
        narrow = narrow_pyx_loops(path.read_text())
        assert not narrow, f"{path.name}: narrow loop indices over elements: {narrow}"
    # the check does see a narrow index over elements
    assert narrow_pyx_loops("def f(n):\n    cdef int i\n    for i in range(n):\n")


def test_every_kernel_fits_the_task_arrays():
    """The runner copies each kernel's buffers into ``fo_task.buf[FO_MAX_BUFS]`` and its
    scalars into ``FO_MAX_HYPER`` doubles per task: a kernel with more would write past
    them."""
    from fastopt import _kernels
    header = (ROOT / "csrc" / "fastopt.h").read_text()
    max_bufs = int(re.search(r"#define\s+FO_MAX_BUFS\s+(\d+)", header).group(1))
    max_hyper = int(re.search(r"#define\s+FO_MAX_HYPER\s+(\d+)", header).group(1))
    for name, (buffers, scalars) in _kernels.KERNELS.items():
        assert len(buffers) <= max_bufs, name
        assert len(scalars) <= max_hyper, name
