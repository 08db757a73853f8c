"""Runs ``triton_interpret_suite.py`` in a fresh process with ``TRITON_INTERPRET=1``.

Triton decides between compiling and interpreting when ``@triton.jit`` runs, i.e. at import of
the kernel module, so the variable cannot be toggled inside this pytest process without leaking
into other tests. A subprocess is isolated and reports each interpreted case by name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).with_name("triton_interpret_suite.py")
ROOT = Path(__file__).resolve().parents[2]


def test_triton_kernels_under_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"interpreted Triton suite failed (rc={proc.returncode}):\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}")
