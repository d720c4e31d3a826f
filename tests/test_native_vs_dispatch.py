"""The portable-against-native comparison's code check (bench/native_vs_dispatch.py):
which kernels it says compile to the same instructions in both builds."""
import importlib.util
import os
import shutil

import pytest

from fastopt import _kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script():
    spec = importlib.util.spec_from_file_location(
        "native_vs_dispatch", os.path.join(ROOT, "bench", "native_vs_dispatch.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_code_compares_every_function_of_the_kernel():
    script = load_script()
    native = {"adam_f32": ["a"], "adamax_f32": ["x"], "lamb_f32": ["l"],
              "lamb_sums_f32": ["s"], "lamb_f64": ["d"]}
    portable = {"adam_f32_avx512": ["a"], "adamax_f32_avx512": ["other"],
                "lamb_f32_avx512": ["l"], "lamb_sums_f32_avx512": ["s"],
                "lamb_f64_avx512": ["d"]}
    # adam's functions are adam_f32 only, not adamax_f32 (which differs)
    assert script.same_code(portable, native, "adam", "float32") == "same"
    assert script.same_code(portable, native, "adamax", "float32") == "differs"
    assert script.same_code(portable, native, "lamb", "float32") == "same"
    portable["lamb_sums_f32_avx512"] = ["t"]  # a second pass that differs counts
    assert script.same_code(portable, native, "lamb", "float32") == "differs"
    del portable["lamb_f64_avx512"]            # missing in the portable build
    assert script.same_code(portable, native, "lamb", "float64") == "differs"
    assert script.same_code(portable, native, "sgd", "float32") == "-"
    assert script.same_code(None, native, "adam", "float32") == "-"


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils' objdump")
@pytest.mark.skipif("avx512" not in _kernels.isa_available(),
                    reason="the build or this CPU has no AVX-512 instantiation")
def test_disassembly_tells_the_instantiations_apart():
    script = load_script()
    functions = script.disassembly(script.library(os.path.dirname(_kernels.__file__)))
    for name in ("lion_f32", "adam_f64"):
        assert functions[name] and functions[name + "_avx512"]
        assert functions[name] != functions[name + "_avx512"]
    # blanked addresses: a copy of a kernel's code elsewhere compares equal
    renamed = {k[:-len("_avx512")]: v for k, v in functions.items() if k.endswith("_avx512")}
    assert script.same_code(functions, renamed, "lion", "float32") == "same"
    assert script.same_code(functions, functions, "lion", "float32") == "differs"


@pytest.mark.parametrize("argv, message", [
    (["--algorithms", "adam,nosuch"], "--algorithms: unknown nosuch"),
    (["--dtypes", "float32,float16"], "--dtypes: float16"),
    (["--passes", "0"], "--passes: at least 1"),
])
def test_unknown_rows_are_refused_before_anything_is_built(monkeypatch, capsys, argv,
                                                             message):
    script = load_script()
    monkeypatch.setattr(script, "build_native",
                        lambda workdir: pytest.fail("built before checking the arguments"))
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
