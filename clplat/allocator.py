"""CPU memory policy for training processes: how tensor memory is mapped, freed and reused.

PyTorch's CPU allocator takes every tensor from glibc, which maps blocks above its mmap threshold
(32 MiB at most) afresh from the operating system and unmaps them on free. Each new activation or
gradient of a long sequence then page-faults once per 4 KiB page on first touch, every training
step, and a Mamba step at B=32, T=1024 creates several tensors of 32-64 MiB. Three policies, chosen
with the environment variable ``CLPLAT_CPU_MEMORY`` before clplat is imported:

``cache`` (default)
    glibc keeps freed memory for the next allocation (``mallopt``: no mmap per block, a free top of
    heap trimmed only above 2 GiB), as PyTorch's caching allocator does on a GPU: after its first
    steps a training loop maps no new pages. Blocks of 2 MiB and more are also advised as
    transparent huge pages (PyTorch's ``THP_MEM_ALLOC_ENABLE=1``), so the memory kept is mapped
    2 MiB at a time and large elementwise passes miss the TLB less. The cost: the process keeps
    its peak memory until it exits, and a large block may hold up to 2 MiB more than its size.
    The glibc half needs glibc (elsewhere only the huge-page half acts).
``huge_pages``
    Only ``THP_MEM_ALLOC_ENABLE=1``: first touches fault 2 MiB at a time, blocks are still unmapped
    on free.
``system``
    PyTorch's and glibc's defaults, untouched.

The huge-page advice acts only where the kernel's transparent huge pages
(``/sys/kernel/mm/transparent_hugepage/enabled``) are ``madvise`` or ``always``. The measurements behind the default
are in docs/performance.md ("Mamba on the CPU"). PyTorch reads ``THP_MEM_ALLOC_ENABLE`` once, at
its first CPU allocation, and glibc's settings act on blocks allocated after them, so the policy is
applied by ``import clplat`` (the entry points ``clplat-train``, ``clplat-tune`` and
``clplat-report``, ``python -m clplat...`` and the benchmarks import clplat before torch allocates
anything). A ``THP_MEM_ALLOC_ENABLE`` set by the user is kept under every policy.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: clplat's switch, read once by ``import clplat``
POLICY_VARIABLE = "CLPLAT_CPU_MEMORY"
POLICIES = ("cache", "huge_pages", "system")
DEFAULT_POLICY = "cache"
#: PyTorch's switch (c10/core/alloc_cpu.cpp), read at the first CPU allocation
THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: mallopt takes an int: the largest free top of heap glibc keeps instead of returning it
_KEEP_UP_TO_BYTES = 2**31 - 1


def selected_policy() -> str:
    """The policy named by ``CLPLAT_CPU_MEMORY`` (default ``cache``); a clear error for any other value."""
    policy = os.environ.get(POLICY_VARIABLE, DEFAULT_POLICY).strip() or DEFAULT_POLICY
    if policy not in POLICIES:
        raise ValueError(f"{POLICY_VARIABLE}={policy!r} is not a CPU memory policy; allowed: {', '.join(POLICIES)}")
    return policy


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse instead of unmapping or trimming them; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_UP_TO_BYTES))


def apply_cpu_memory_policy() -> str:
    """Apply the selected policy to this process (called by ``import clplat``); returns its name."""
    policy = selected_policy()
    if policy == "cache":
        keep_freed_memory()
    if policy in ("cache", "huge_pages") and sys.platform.startswith("linux"):
        os.environ.setdefault(THP_VARIABLE, "1")  # PyTorch advises huge pages on Linux only
    return policy
