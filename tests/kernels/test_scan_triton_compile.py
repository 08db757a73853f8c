"""The Triton kernels compile for a Hopper GPU (sm_90) -- checked on a machine without one.

The interpreter runs kernels as Python and misses what only the compiler rejects (type errors
in constexpr branches, unsupported ops, layouts). Triton can compile ahead of time for a given
target with the ``ptxas`` it ships, so CPU-only CI catches those before a GPU ever sees the code.
"""

from __future__ import annotations

import os

import pytest

triton = pytest.importorskip("triton")

if os.environ.get("TRITON_INTERPRET") == "1":  # kernels are interpreted functions then
    pytest.skip("kernels were created in interpreter mode", allow_module_level=True)

try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile
except ImportError as exc:  # internal API moved: nothing to check with this Triton
    pytest.skip(f"Triton's ahead-of-time compile API is unavailable: {exc}", allow_module_level=True)

from clplat.kernels.triton_impl import DEFAULT_BLOCK_D, DEFAULT_BLOCK_T, _scan_kernel
from clplat.kernels.triton_selective import _NUM_WARPS, _selective_bwd_kernel, _selective_fwd_kernel

SM90 = GPUTarget("cuda", 90, 32)
_INT_ARGS = {"T", "D", "CL", "NC", "Din", "N", "n_tiles", "n_dblk"}
_FP32_BUFFERS = {"SUM_A", "SUM_X", "CHK", "LAST", "DA_P", "DB_P", "DC_P"}


def _compile(kernel, ptr_type: str, constexprs: dict, num_warps: int = 4) -> None:
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in _INT_ARGS:
            signature[name] = "i32"
        elif name in _FP32_BUFFERS:
            signature[name] = "*fp32"
        else:
            signature[name] = ptr_type
    try:
        triton_compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs), target=SM90,
                       options={"num_warps": num_warps})
    except (FileNotFoundError, RuntimeError) as exc:
        if "ptxas" in str(exc):
            pytest.skip(f"no usable ptxas: {exc}")
        raise


_FWD = {"REVERSE": False, "SHIFT": False, "HAS_CARRY": True, "WRITE_OUT": True, "WRITE_SUM": False,
        "COMPUTE_DA": False, "HAS_H0": False}
_BWD = {"REVERSE": True, "SHIFT": True, "HAS_CARRY": True, "WRITE_OUT": True, "WRITE_SUM": False,
        "COMPUTE_DA": True, "HAS_H0": True}
_SUMMARY = {"REVERSE": False, "SHIFT": True, "HAS_CARRY": False, "WRITE_OUT": False, "WRITE_SUM": True,
            "COMPUTE_DA": False, "HAS_H0": False}


@pytest.mark.parametrize(
    "ptr_type, mode, complex_, fp64",
    [("*fp32", _FWD, False, False), ("*fp32", _BWD, False, False), ("*fp32", _SUMMARY, True, False),
     ("*fp32", _BWD, True, False), ("*bf16", _BWD, False, False), ("*fp64", _BWD, False, True)],
    ids=["fwd", "bwd", "complex-summary", "complex-bwd", "bf16-bwd", "fp64-bwd"],
)
def test_scan_kernel_compiles_for_sm90(ptr_type, mode, complex_, fp64):
    _compile(_scan_kernel, ptr_type, {**mode, "IS_COMPLEX": complex_, "IS_FP64": fp64,
                                      "BT": DEFAULT_BLOCK_T, "BD": DEFAULT_BLOCK_D})


def test_selective_kernels_compile_for_sm90():
    blocks = {"BT": 32, "BD": 8, "NP": 16}
    _compile(_selective_fwd_kernel, "*fp32", {"SAVE_CHK": True, **blocks}, _NUM_WARPS)
    _compile(_selective_bwd_kernel, "*fp32", {"HAS_DLAST": True, **blocks}, _NUM_WARPS)
