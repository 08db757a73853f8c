"""Every notebook executes top to bottom against runs made here, and draws its figures.

The notebooks are jupytext ``py:percent`` scripts: each is read into a notebook, its
``parameters`` cell is followed by an injected cell pointing it at the test's runs (what
papermill does), and nbclient runs it in a fresh kernel. A notebook that raises fails the test
with the failing cell; one that runs but draws fewer figures than it should fails too.

Two tiny real runs (naive and replay, 3 iterations per experience) serve all three notebooks,
laid out like a multirun so the sweep notebooks see two groups.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clplat.experiment import run_experiment
from tests.conftest import TINY, compose_config

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# notebook -> the fewest PNG figures it must produce
EXPECTED_FIGURES = {"forgetting_curves": 2, "stability_gap": 4, "compare_strategies": 2}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    for num, strategy in enumerate(("naive", "replay")):
        cfg = compose_config([*TINY, "trainer.iterations=3", "trainer.checkpoint=false", f"strategy={strategy}"],
                             root / f"{num}_strategy={strategy}")
        run_experiment(cfg)
    return root


def _parameters(name: str, sweep: Path) -> dict[str, object]:
    first_run = sorted(p for p in sweep.iterdir() if p.is_dir())[0]
    return {"forgetting_curves": {"run_dir": str(first_run)},
            "stability_gap": {"path": str(sweep)},
            "compare_strategies": {"sweep_dir": str(sweep)}}[name]


def _with_parameters(nb: nbformat.NotebookNode, values: dict[str, object]) -> nbformat.NotebookNode:
    """Insert the assignments after the cell tagged ``parameters`` (papermill's convention)."""
    index = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.get("metadata", {}).get("tags", []))
    source = "\n".join(f"{key} = {value!r}" for key, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)
    return nb


def _figures(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for output in cell.get("outputs", []))


def test_every_notebook_is_tested() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.py")) == sorted(EXPECTED_FIGURES)
    for name in EXPECTED_FIGURES:  # each takes its path as a parameter and uses clplat.analysis only
        text = (NOTEBOOKS / f"{name}.py").read_text()
        assert 'tags=["parameters"]' in text
        assert "from clplat." not in text.replace("from clplat.analysis import", "")


def test_notebooks_execute_and_draw(sweep: Path, tmp_path: Path) -> None:
    notebooks = {}
    for name in EXPECTED_FIGURES:
        nb = jupytext.read(NOTEBOOKS / f"{name}.py")
        notebooks[name] = _with_parameters(nb, _parameters(name, sweep))

    async def run_all() -> None:
        # one kernel per notebook, side by side: kernel start-up dominates and overlaps well
        clients = [nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                           resources={"metadata": {"path": str(tmp_path)}})
                   for nb in notebooks.values()]
        await asyncio.gather(*(client.async_execute() for client in clients))

    asyncio.run(run_all())
    for name, nb in notebooks.items():
        assert _figures(nb) >= EXPECTED_FIGURES[name], f"{name}: {_figures(nb)} figures"
        nbformat.validate(nb)
        nbformat.write(nb, tmp_path / f"{name}.ipynb")  # left for inspection when debugging


def test_every_parameter_is_readable_by_papermill() -> None:
    """papermill reads ``name = value  # help`` lines; an ``=`` in the help or a comment-only
    continuation line makes it give up on the whole cell."""
    import re

    for name in EXPECTED_FIGURES:
        cell = (NOTEBOOKS / f"{name}.py").read_text().split('# %% tags=["parameters"]\n')[1].split("\n# %%")[0]
        for line in filter(str.strip, cell.splitlines()):
            assert re.fullmatch(r"\w+ = [^#]+?\s+# [^=]+", line), (name, line)


def test_the_documented_headless_command_runs_a_notebook(sweep: Path, tmp_path: Path) -> None:
    """``jupytext --execute --run-path .`` from a project directory finds its newest run (notebooks/README.md)."""
    import shutil
    import subprocess
    import sys

    readme = (NOTEBOOKS / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "jupytext --to ipynb --set-kernel" in line)
    assert "--execute --run-path ." in command
    project = tmp_path / "project"
    run = sorted(p for p in sweep.iterdir() if p.is_dir())[0]
    shutil.copytree(run, project / "runs" / "2026-12-06" / run.name)
    output = tmp_path / "elsewhere" / "forgetting_curves.ipynb"
    output.parent.mkdir()
    jupytext_cli = Path(sys.executable).parent / "jupytext"
    result = subprocess.run([str(jupytext_cli), "--to", "ipynb", "--set-kernel", "python3", "--execute", "--run-path", ".",
                             str(NOTEBOOKS / "forgetting_curves.py"), "-o", str(output)],
                            cwd=project, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _figures(nbformat.read(output, as_version=4)) >= EXPECTED_FIGURES["forgetting_curves"]
