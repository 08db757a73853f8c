"""clplat's CPU allocator default (clplat.allocator): huge-page allocation for large tensors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the variable as the process sees it, and whether an 8 MiB tensor took PyTorch's huge-page path:
#: there it starts on a page boundary (and is advised as huge pages); otherwise glibc's 16-byte
#: chunk header leaves it 64 bytes past one
PROBE = "t = torch.empty(8 << 18); print(os.environ.get('THP_MEM_ALLOC_ENABLE'), t.data_ptr() % 4096 == 0)"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PyTorch advises huge pages on Linux only")


def _probe(before: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"} | env
    environ["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", f"import os; {before}; {PROBE}"], env=environ,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.split()


def test_importing_clplat_first_turns_on_pytorchs_huge_page_allocation():
    assert _probe("import clplat; import torch") == ["1", "True"]


def test_a_users_setting_is_kept():
    assert _probe("import clplat; import torch", THP_MEM_ALLOC_ENABLE="0") == ["0", "False"]


def test_after_torchs_first_allocation_the_default_no_longer_applies():
    assert _probe("import torch; torch.empty(1); import clplat") == ["1", "False"]
