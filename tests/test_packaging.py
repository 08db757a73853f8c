"""clplat as users install it: the sdist and the wheel carry the configs and install one
top-level package, and ``clplat-train`` from a fresh environment runs outside the repository.

Nothing is downloaded: the wheel is built without build isolation (this environment's
setuptools) from the sdist, installed with ``--no-deps --no-index``, and the fresh environment
reuses this one's packages (torch, Lightning, Hydra) through a ``.pth`` file.
15-30 s on 2 busy cores (most of it the run and the import of torch), so it stays in the
default test selection.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

from tests.conftest import TINY
from tests.helpers import ROOT

#: what pyproject.toml builds from: the package folders, the metadata and the readme
SOURCES = ("pyproject.toml", "README.md", "clplat", "conf", "strategies", "streams")
#: repository folder -> where the wheel installs it
INSTALLED_AS = {"clplat": "clplat", "strategies": "clplat/strategies", "streams": "clplat/streams",
                "conf": "clplat/conf"}


def _expected_files() -> set[str]:
    """Every module and config of the checkout, at the path the wheel must hold it."""
    expected = set()
    for folder, target in INSTALLED_AS.items():
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".yaml", ".cpp"):
                expected.add(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    return expected


#: pip offline: no index, no version check against PyPI
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    env = {**(os.environ if env is None else env), **OFFLINE_PIP}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _fresh_env(venv: Path) -> dict[str, str]:
    """Environment of a command in the fresh venv: no checkout on the path, no network, W&B off."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def test_wheel_from_the_sdist_installs_configs_and_runs_outside_the_repository(tmp_path):
    # the sdist, built from a copy of the sources so the checkout gets no build/ or egg-info
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])",
          str(tmp_path / "dist")], cwd=src)
    (sdist,) = (tmp_path / "dist").glob("clplat-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    yamls = {p.relative_to(ROOT).as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert yamls and yamls <= names, sorted(yamls - names)

    # the wheel, from the unpacked sdist (what `pip install clplat-*.tar.gz` does)
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp_path / "wheel"), str(unpacked)], cwd=tmp_path)
    (wheel,) = (tmp_path / "wheel").glob("clplat-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
    top_level = {name.split("/")[0] for name in files if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"clplat"}, top_level  # no generic `strategies` / `streams` next to it
    missing = _expected_files() - files
    assert not missing, f"the wheel lacks {sorted(missing)[:10]} (a package missing from pyproject.toml's packages?)"

    # a fresh venv that reuses this environment's packages, the wheel installed into it
    venv = tmp_path / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    where_packages = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", where_packages], cwd=tmp_path).strip())
    reused = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "reuse_test_environment.pth").write_text("\n".join(reused) + "\n")
    env = _fresh_env(venv)
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
         cwd=tmp_path, env=env)

    # clplat-train from a directory outside the repository
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_dir = elsewhere / "run"
    _run([str(venv / "bin" / "clplat-train"), *TINY, "plots=false", f"hydra.run.dir={run_dir}"], cwd=elsewhere, env=env)
    assert json.loads((run_dir / "summary.json").read_text())["strategy"] == "replay"
    assert "_target_: clplat.strategies.replay.Replay" in (run_dir / "config.yaml").read_text()

    # the installed package (not the checkout) ran, with its own configs; its checkpoints load
    probe = ("import importlib.util, json, sys, clplat; "
             "m = clplat.load_run(sys.argv[1]).model(); "
             "print(json.dumps([clplat.__file__, str(clplat.config_dir()), type(m.strategy).__module__, "
             "importlib.util.find_spec('strategies') is None, importlib.util.find_spec('streams') is None]))")
    where, conf, module, no_strategies, no_streams = json.loads(
        _run([str(python), "-c", probe, str(run_dir)], cwd=elsewhere, env=env).strip().splitlines()[-1])
    assert Path(where).is_relative_to(site) and Path(conf) == site / "clplat" / "conf", (where, conf)
    assert module == "clplat.strategies.replay" and no_strategies and no_streams


def test_a_source_checkout_resolves_the_packaged_names_to_its_folders():
    import importlib.util

    import clplat
    import clplat.strategies
    import clplat.streams.sources

    assert Path(clplat.strategies.__file__) == ROOT / "strategies" / "__init__.py"
    assert Path(clplat.streams.sources.__file__) == ROOT / "streams" / "sources" / "__init__.py"
    assert clplat.config_dir() == ROOT / "conf"
    assert importlib.util.find_spec("clplat.tests") is None  # only the two mapped folders


def _imported_modules(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_layers_import_downwards_only():
    """The core imports neither methods nor streams, and no stream imports a method: Hydra's
    ``_target_`` wires them together (docs/architecture.md, Layout)."""
    def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
        return sorted(f"{path.relative_to(ROOT)}: {name}" for path in (ROOT / folder).rglob("*.py")
                      for name in _imported_modules(path) if name.startswith(forbidden))

    assert offenders("clplat", ("clplat.strategies", "clplat.streams", "strategies", "streams")) == []
    assert offenders("streams", ("clplat.strategies", "strategies")) == []
    # strategies/ holds the methods, one module each; what they are built from is in strategies/parts/
    assert {p.stem for p in (ROOT / "strategies").glob("*.py")} - {"__init__"} == _method_modules()
    assert offenders("strategies/parts", tuple(f"clplat.strategies.{m}" for m in _method_modules())) == []


def test_methods_read_the_run_from_their_context():
    """No method reaches into the Lightning trainer or another method: what a hook needs of the
    run is in its ``RunContext`` (clplat/context.py), kept current by the dispatcher, and what the
    base strategy offers plugins is declared (``provides_buffer``, ``accepts_plugins``, ...)."""
    import re

    reaching = re.compile(r"\.trainer\b|\bmodule\.strategy\b|\.strategy\.(base|plugins)\b")
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in sorted((ROOT / "strategies").rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1) if reaching.search(line)]
    assert offenders == []


def _method_modules() -> set[str]:
    """The modules that configs name as a strategy or plugin."""
    import re

    return {m for group in ("strategy", "plugin") for path in (ROOT / "conf" / group).glob("*.yaml")
            for m in re.findall(r"_target_: clplat\.strategies\.(\w+)\.", path.read_text())}


def test_components_name_their_options_relative_to_their_config_node():
    """A strategy, plugin, backbone or stream names its own options relative (``".density"``):
    whoever builds it from a config node qualifies the key with that node's path
    (``clplat.errors.ConfigError``), so a component reused under another key reports that key.
    Here: no string in their modules is a key of their own group (``"strategy.density"``)."""
    import ast
    import re

    groups = {"strategies": "strategy|plugin", "streams": "stream", "clplat/backbones": "backbone",
              "clplat/rehearsal.py": "strategy|plugin", "clplat/buffers.py": "strategy|plugin",
              "clplat/rehearsal_schedule.py": "strategy|plugin|stream"}
    offenders = []
    for where, group in groups.items():
        key = re.compile(rf"^({group})\.[a-z_]+(\.[a-z_]+)*$")
        key_start = re.compile(rf"^({group})\.")
        paths = [ROOT / where] if where.endswith(".py") else sorted((ROOT / where).rglob("*.py"))
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and key.match(node.value):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
                elif (isinstance(node, ast.JoinedStr) and isinstance(node.values[0], ast.Constant)
                      and key_start.match(str(node.values[0].value))):  # f"strategy.{name}"
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: f-string {node.values[0].value!r}...")
    assert offenders == []
