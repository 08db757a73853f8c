"""clplat's CPU memory policies (clplat.allocator), each checked in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: prints: THP_MEM_ALLOC_ENABLE as the process sees it; whether an 8 MiB tensor took PyTorch's
#: huge-page path (there it starts on a page boundary; glibc's 16-byte chunk header leaves it 64
#: bytes past one otherwise); and the MiB of resident memory still held after a touched 64 MiB
#: tensor is freed (kept by the cache policy, returned to the system otherwise)
PROBE = """
def resident_mib():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') >> 20
aligned = torch.empty(8 << 18).data_ptr() % 4096 == 0
before = resident_mib()
t = torch.ones(16 << 20)
del t
print(os.environ.get('THP_MEM_ALLOC_ENABLE'), aligned, resident_mib() - before)
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the policies act on Linux only")


def _run(before: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "CLPLAT_CPU_MEMORY")} | env
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", f"import os\n{before}\n{PROBE}"], env=environ,
                          capture_output=True, text=True, cwd=ROOT)


def _probe(before: str, **env: str) -> tuple[str, str, int]:
    out = _run(before, **env)
    assert out.returncode == 0, out.stderr
    thp, aligned, kept_mib = out.stdout.split()
    return thp, aligned, int(kept_mib)


def test_the_default_policy_keeps_freed_memory_in_huge_pages():
    thp, aligned, kept_mib = _probe("import clplat\nimport torch")
    assert (thp, aligned) == ("1", "True")
    assert kept_mib >= 60


def test_the_cache_policy_keeps_a_users_huge_page_setting():
    thp, aligned, kept_mib = _probe("import clplat\nimport torch", CLPLAT_CPU_MEMORY="cache", THP_MEM_ALLOC_ENABLE="0")
    assert (thp, aligned) == ("0", "False")
    assert kept_mib >= 60


def test_the_system_policy_returns_freed_memory():
    thp, aligned, kept_mib = _probe("import clplat\nimport torch", CLPLAT_CPU_MEMORY="system")
    assert (thp, aligned) == ("None", "False")
    assert kept_mib < 16


def test_the_huge_page_policy_turns_on_pytorchs_huge_page_allocation():
    thp, aligned, kept_mib = _probe("import clplat\nimport torch", CLPLAT_CPU_MEMORY="huge_pages")
    assert (thp, aligned) == ("1", "True")
    assert kept_mib < 16


def test_a_users_huge_page_setting_is_kept():
    thp, aligned, _ = _probe("import clplat\nimport torch", CLPLAT_CPU_MEMORY="huge_pages", THP_MEM_ALLOC_ENABLE="0")
    assert (thp, aligned) == ("0", "False")


def test_after_torchs_first_allocation_huge_pages_no_longer_apply():
    thp, aligned, _ = _probe("import torch\ntorch.empty(1)\nimport clplat", CLPLAT_CPU_MEMORY="huge_pages")
    assert (thp, aligned) == ("1", "False")


def test_an_unknown_policy_is_refused_in_one_line():
    out = _run("import clplat", CLPLAT_CPU_MEMORY="fast")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "clplat: error: CLPLAT_CPU_MEMORY='fast' is not a CPU memory policy; allowed: cache, huge_pages, system"]
