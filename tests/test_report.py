"""A Hydra multirun through the CLI, then ``clplat-report`` on its directory."""

from __future__ import annotations

import pandas as pd

from clplat.report import main as report_main
from tests.conftest import TINY
from tests.test_cli import run_cli


def test_multirun_sweep_then_report(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", *TINY, "trainer.iterations=3", "trainer.checkpoint=false", "strategy=naive,replay",
                   "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list(sweep.glob("*/summary.json"))) == 4
    assert report_main([str(sweep)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| naive") or line.startswith("| replay")]
    assert len(rows) == 2 and all("±" in row for row in rows)
    table = pd.read_csv(sweep / "report.csv")
    assert table.strategy.tolist() == ["naive", "replay"] and table.runs.tolist() == [2, 2]
    assert (sweep / "report.md").read_text().count("\n") == 4
