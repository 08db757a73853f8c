"""Named seed streams: distinct, stable across processes, and the numbers they always drew."""

from __future__ import annotations

import subprocess
import sys

import torch

from clplat.seeds import SeedStream, seeded_generator
from tests.helpers import ROOT


def test_every_stream_has_its_own_numbers():
    draws = {tuple(torch.randint(0, 2**31, (4,), generator=seeded_generator(0, s)).tolist()) for s in SeedStream}
    assert len(draws) == len(SeedStream)
    assert SeedStream.REFRESH_FISHER != SeedStream.HYPERNET


def test_a_stream_draws_what_its_bare_integer_drew():
    """The enum keeps results at a given seed: the key hashes as the integers it replaced."""
    old = torch.Generator().manual_seed(hash((3, 1, 2)) & 0x7FFF_FFFF_FFFF_FFFF)
    assert torch.equal(torch.rand(5, generator=seeded_generator(3, SeedStream.BUFFER, 2)), torch.rand(5, generator=old))


def test_streams_do_not_depend_on_the_process_hash_seed():
    code = ("from clplat.seeds import SeedStream, seeded_generator; import torch; "
            "print(torch.rand(3, generator=seeded_generator(7, SeedStream.SHARP_MASKS, 1)).tolist())")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                              env={"PYTHONHASHSEED": str(h), "PYTHONPATH": str(ROOT)}).stdout for h in (1, 2)}
    assert len(outputs) == 1
