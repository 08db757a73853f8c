"""MkDocs hooks of the documentation site (docs/mkdocs.yml).

``on_files`` mounts every page of ``docs/`` (outside this folder) at its own path, so the pages
keep their place in the repository, and adds the generated reference pages:

* ``reference/config.md``: every config group and option, from ``conf/`` (``config_reference.py``);
* ``reference/cli.md``: the ``--help`` text of ``clplat-train``, ``clplat-report`` and
  ``clplat-tune``, run at build time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent
ROOT = DOCS.parent
sys.path.insert(0, str(HERE))

from config_reference import config_reference_markdown  # noqa: E402

SKIPPED_SUFFIXES = (".py", ".pyc", ".yml")

COMMANDS = {
    "clplat-train": ["-m", "clplat.train", "--help"],
    "clplat-report": ["-m", "clplat.report", "--help"],
    "clplat-tune": ["-m", "clplat.tune", "--help"],
}


def _help_texts() -> dict[str, str]:
    """Each command's ``--help`` output (the three run side by side: each imports torch or pandas)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    running = {name: subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, args in COMMANDS.items()}
    texts = {}
    for name, proc in running.items():
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} --help failed (exit {proc.returncode}): {err.strip()[-2000:]}")
        texts[name] = out.rstrip()
    return texts


def cli_reference_markdown() -> str:
    texts = _help_texts()
    out = ["# Command line", "",
           "Generated from the commands' own `--help` when the site is built. Exit codes: "
           "[exit codes](exit-codes.md).", ""]
    for name, text in texts.items():
        out += [f"## `{name}`", "", "```text", f"$ {name} --help", text, "```", ""]
    return "\n".join(out) + "\n"


def on_files(files: Files, config) -> Files:  # noqa: ANN001 - MkDocsConfig
    site_dir = Path(config["site_dir"]).resolve()  # a build into docs/site must not become pages
    for path in sorted(DOCS.rglob("*")):
        rel = path.relative_to(DOCS)
        if (not path.is_file() or rel.parts[0] == HERE.name or path.suffix in SKIPPED_SUFFIXES
                or path.resolve().is_relative_to(site_dir)
                or any(part.startswith(".") or part == "__pycache__" for part in rel.parts)):
            continue
        files.append(File.generated(config, rel.as_posix(), abs_src_path=str(path)))
    files.append(File.generated(config, "reference/config.md", content=config_reference_markdown(ROOT / "conf")))
    files.append(File.generated(config, "reference/cli.md", content=cli_reference_markdown()))
    return files


def on_serve(server, config, builder):  # noqa: ANN001, ANN201 - mkdocs serve: rebuild on page edits
    server.watch(str(DOCS))
    server.watch(str(ROOT / "conf"))
    return server
