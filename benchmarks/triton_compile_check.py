"""Compile labelsmooth's Triton kernels for a Hopper GPU without one, and check what the compiler reports.

Run from the repository root, with Triton installed (any machine; no GPU, no ``TRITON_INTERPRET``)::

    PYTHONPATH=src python benchmarks/triton_compile_check.py

``triton.compile`` takes each kernel of :mod:`labelsmooth.kernels.triton_linear` through every stage
down to a cubin for sm_90 (ptxas comes with Triton's wheel), at the GPU tile sizes and the
launches' options (``num_warps`` from the tiles, Triton's default ``num_stages``), for every input
dtype and a spread of its ``tl.constexpr`` switches. Any stage the installed Triton rejects fails
here, and so does a kernel whose shared memory exceeds what one block may use on an H100 or H200
(227 KiB): Triton would refuse to launch it there (``OutOfResources``). That is how a Triton
version other than the tests' (the lent H200 has 3.6) is checked before a GPU is lent. Exit status
1 if any variant fails or is over.
"""

from __future__ import annotations

import itertools
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)  # before Triton is imported: compiled kernels, not interpreted

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from labelsmooth.kernels import triton_linear as tlx

#: Shared memory one block may use on sm_90 (cudaDevAttrMaxSharedMemoryPerBlockOptin), bytes.
SM90_SHARED = 232448
#: Triton's names of the input dtypes, and torch's.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Pointer arguments by name: the inputs' dtype for the layer's tensors, int64 targets, float32 else.
INPUT_POINTERS, INDEX_POINTERS = {"h_ptr", "w_ptr", "b_ptr"}, {"y_ptr"}
FLOAT_SCALARS = {"softcap", "threshold"}


def signature(kernel: triton.JITFunction, dtype: str, constants: dict[str, object]) -> dict[str, str]:
    """Triton's type string per argument, from the module's naming: ``*_ptr`` pointers, capitals
    constexpr, ``softcap`` and the backward's skip ``threshold`` float32, the rest int32 sizes and
    strides."""

    def kind(name: str) -> str:
        if name in constants:
            return "constexpr"
        if name.endswith("_ptr"):
            return f"*{dtype}" if name in INPUT_POINTERS else "*i64" if name in INDEX_POINTERS else "*fp32"
        return "fp32" if name in FLOAT_SCALARS else "i32"

    return {name: kind(name) for name in kernel.arg_names}


def constants(kernel: triton.JITFunction, dtype: str, switches: dict[str, bool]) -> dict[str, object]:
    """The ``tl.constexpr`` values of one compiled (not interpreted) variant."""
    tiles = tlx.tiles_for(DTYPES[dtype])._asdict()
    blocks = {"BLOCK_M": "rows", "BLOCK_V": "cols", "BLOCK_K": "depth", "GROUP_M": "group"}
    known: dict[str, object] = {
        "UPCAST": False, "PRECISION": "tf32" if dtype == "fp32" else "ieee",
        **{name: tiles[field] for name, field in blocks.items() if field in tiles}, **switches,
    }
    wanted = [name for name in kernel.arg_names if name.isupper()]
    missing = [name for name in wanted if name not in known]
    if missing:
        raise ValueError(f"{kernel.__name__}: no value for the constexpr arguments {missing}; add them here")
    return {name: known[name] for name in wanted}


def variants() -> list[tuple[str, str, dict[str, bool]]]:
    """(kernel name, dtype, switches): bias, class mass and softcap all off, all on, and mixed."""
    out = []
    for dtype, (bias, mass, cap) in itertools.product(DTYPES, [(True, False, False), (False, True, True)]):
        flags = {"HAS_BIAS": bias, "HAS_CM": mass, "HAS_CAP": cap}
        out.append(("_forward_kernel", dtype, flags))
        out.append(("_backward_kernel", dtype, {**flags, "NEED_H": True, "NEED_W": True, "NEED_B": bias}))
    return out


def main() -> int:
    if tlx.INTERPRETED:
        raise SystemExit("TRITON_INTERPRET is set for this process: unset it and run again")
    target = GPUTarget("cuda", 90, 32)
    failures = 0
    print(f"triton {triton.__version__}, sm_90, tiles {[tuple(tlx.tiles_for(d)) for d in DTYPES.values()]}")
    for name, dtype, switches in variants():
        kernel = getattr(tlx, name)
        label = f"{name:17s} {dtype} " + " ".join(f"{k}={int(v)}" for k, v in switches.items())
        try:
            values = constants(kernel, dtype, switches)
            source = ASTSource(kernel, signature(kernel, dtype, values), constexprs=values)
            warps = tlx.tiles_for(DTYPES[dtype]).warps
            compiled = triton.compile(source, target=target, options={"num_warps": warps})
            shared = compiled.metadata.shared
        except Exception as error:  # any stage's failure is the finding
            failures += 1
            print(f"FAIL {label}: {type(error).__name__}: {str(error).strip()[:300]}")
            continue
        over = shared > SM90_SHARED
        failures += over
        print(f"{'OVER' if over else 'ok  '} {label}: shared memory {shared / 1024:.0f} KiB")
    print(f"{failures} failed or over the {SM90_SHARED / 1024:.0f} KiB a block may use")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
