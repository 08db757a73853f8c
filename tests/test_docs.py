"""The documentation site builds with warnings as errors, its how-to guides run, and
``clplat-train --help`` is clplat's own.

How-to pages are run literally: a fenced block with ``title="path"`` is written to that path of an
empty folder (the user's project), then the page's ``bash`` blocks run in one shell, in order, with
its ``python`` blocks run in between as scripts, the way a reader would follow the page. A block
preceded by ``<!-- not run by the tests ... -->`` is skipped. ``clplat-train`` and its sibling
commands are shims that run this checkout's code, so the test checks the tree it is part of.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONF = ROOT / "conf"
HOWTO_PAGES = sorted((DOCS / "howto").glob("*.md"))
COMMANDS = {"clplat-train": "clplat.train", "clplat-report": "clplat.report", "clplat-tune": "clplat.tune"}
FENCE = re.compile(r"^```([\w+-]*)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
TITLE = re.compile(r'title="([^"]+)"')
SKIP_MARK = "<!-- not run by the tests"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "NO_MKDOCS_2_WARNING": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def _groups() -> dict[str, list[str]]:
    """Every user-facing config group of conf/ and its options."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(CONF.iterdir()) if d.is_dir() and d.name != "hydra"}


# -- the site ------------------------------------------------------------------------------------
def test_site_builds_strict_with_generated_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    # not -q: MkDocs counts warnings for --strict from its log, so a quiet build never fails
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(DOCS / "mkdocs.yml"), "-d", str(site)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    # every existing page of docs/ is part of the site, not only the nav's new ones
    for page in DOCS.glob("*.md"):
        expected = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert expected.is_file(), f"{page.name} is not in the built site"
    config_page = (site / "reference" / "config" / "index.html").read_text()
    for group, options in _groups().items():
        for option in options:  # generated from conf/: a new option file appears without editing docs
            assert f'id="{group}-{option}"' in config_page, f"{group}={option} missing from the config reference"
    cli_page = (site / "reference" / "cli" / "index.html").read_text()
    assert all(name in cli_page for name in COMMANDS) and "resume=" in cli_page
    api_page = (site / "reference" / "api" / "index.html").read_text()
    for name in ("clplat.strategy.Strategy", "clplat.strategy.Plugin", "clplat.analysis.runs.load_run",
                 "clplat.evaluation.metrics.stability_gap"):
        assert f'id="{name}"' in api_page, f"{name} missing from the API reference"


# -- --help ----------------------------------------------------------------------------------------
def test_help_is_clplats_own_and_lists_groups_options_keys_and_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "clplat.train", "--help"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "powered by Hydra" not in text
    for group, options in _groups().items():
        line = next((ln for ln in text.splitlines() if ln.startswith(f"{group}: ")), None)
        assert line is not None, f"group {group} not listed"
        assert set(options) <= set(line.split(": ", 1)[1].split(", ")), f"options of {group} incomplete"
    train = yaml.safe_load((CONF / "train.yaml").read_text())
    for key in (k for k in train if k not in ("defaults", "hydra")):
        assert re.search(rf"^ +\+?{key}\b", text, re.M), f"top-level key {key} not explained"
    # progress is not declared in train.yaml, so it is added with '+'; the help must say which
    progress = "progress=" if "progress" in train else "+progress="
    assert progress in text and all(mode in text for mode in ("bar", "lines", "quiet"))
    for needle in ("resume=<run dir>", "clplat-report", "clplat-tune", "hydra.searchpath", "docs/"):
        assert needle in text, needle


# -- the how-to guides ---------------------------------------------------------------------------
def _blocks(page: Path) -> list[tuple[str, str | None, str]]:
    """``(language, title, code)`` of every fenced block of ``page`` that the tests run."""
    text = page.read_text()
    out = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        if before and before[-1].startswith(SKIP_MARK):
            continue
        title = TITLE.search(match.group(2))
        out.append((match.group(1), title.group(1) if title else None, match.group(3)))
    return out


def _shims(bin_dir: Path) -> None:
    """``clplat-*`` commands that behave like the installed console scripts (the current directory
    is *not* importable, as for a console script) but run this checkout."""
    bin_dir.mkdir(parents=True)
    for name, module in COMMANDS.items():
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(1, {str(ROOT)!r})\n"
                        f"from {module} import main\nsys.exit(main())\n")
        path.chmod(0o755)
    # `python` as in the user's environment where clplat is installed (their own modules on PYTHONPATH)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{ROOT}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)


def _page_script(page: Path, project: Path) -> str:
    """Write the page's files into ``project``; return the shell script of its commands."""
    script = ["set -eo pipefail"]
    for i, (lang, title, code) in enumerate(_blocks(page)):
        if title is not None:
            (project / title).parent.mkdir(parents=True, exist_ok=True)
            (project / title).write_text(code)
        elif lang == "bash":
            script += [f"echo '### block {i}'", code]
        elif lang == "python":
            (project / f"_block_{i}.py").write_text(code)
            script += [f"echo '### block {i}'",
                       f'PYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" "{sys.executable}" _block_{i}.py']
    assert len(script) > 1, f"{page.name} has no code the tests run"
    return "\n".join(script)


@pytest.fixture(scope="module")
def howto_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """Every how-to page run in its own empty folder; the pages run side by side (one per core):
    each is a few single-threaded processes, mostly importing torch."""
    root = tmp_path_factory.mktemp("howto")
    bin_dir = root / "bin"
    _shims(bin_dir)
    env = {**_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def run(page: Path) -> subprocess.CompletedProcess:
        project = root / page.stem / "my_project"
        project.mkdir(parents=True)
        return subprocess.run(["bash", "-c", _page_script(page, project)], cwd=project, env=env,
                              capture_output=True, text=True, timeout=400)

    with ThreadPoolExecutor(max_workers=max(1, min(len(HOWTO_PAGES), os.cpu_count() or 1))) as pool:
        return dict(zip([p.stem for p in HOWTO_PAGES], pool.map(run, HOWTO_PAGES)))


@pytest.mark.parametrize("page", HOWTO_PAGES, ids=[p.stem for p in HOWTO_PAGES])
def test_howto_page_runs(page: Path, howto_runs: dict[str, subprocess.CompletedProcess]) -> None:
    proc = howto_runs[page.stem]
    assert proc.returncode == 0, (f"{page.name} failed (exit {proc.returncode})\n"
                                  + proc.stdout[-4000:] + "\n--- stderr\n" + proc.stderr[-4000:])
