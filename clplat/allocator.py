"""CPU memory default: PyTorch's transparent-huge-page allocation for large tensors.

PyTorch's CPU allocator takes every tensor from glibc, which maps blocks above its mmap
threshold (32 MiB at most) afresh from the operating system and unmaps them on free. Each new
activation or gradient of a long sequence then page-faults once per 4 KiB page on first touch, and
a Mamba training step at B=32, T=1024 creates several tensors of 32-64 MiB. With
``THP_MEM_ALLOC_ENABLE=1`` PyTorch advises transparent huge pages for allocations of 2 MiB and
more (``madvise``), so the kernel maps them 2 MiB at a time: measured on one core against
PyTorch's default, the fused selective scan's forward + backward took 12-20 % less time and that
Mamba step's fastest repeats 8-14 % less, though the step varies more from repeat to repeat (a
huge-page fault may wait for the kernel to compact memory; docs/performance.md, "Mamba on the
CPU"). The cost: a large tensor may hold up to one 2 MiB page more than its size. Without transparent huge pages in the kernel
(``/sys/kernel/mm/transparent_hugepage/enabled`` = never) the setting changes nothing.

PyTorch reads the variable once, at its first CPU allocation, so it has to be set before that:
``import clplat`` does it (the entry points ``clplat-train``, ``clplat-tune`` and ``clplat-report``,
``python -m clplat...`` and the benchmarks import clplat before torch allocates anything), unless
the variable is already set -- ``THP_MEM_ALLOC_ENABLE=0`` keeps PyTorch's default. In a process
whose torch allocated before clplat was imported it has no effect.
"""

from __future__ import annotations

import os
import sys

#: PyTorch's switch (c10/core/alloc_cpu.cpp), read at the first CPU allocation
THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def prefer_huge_pages() -> None:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` unless it is set (Linux only: PyTorch advises huge pages there)."""
    if sys.platform.startswith("linux"):
        os.environ.setdefault(THP_VARIABLE, "1")
