"""The configuration reference page, generated from ``conf/`` at every docs build.

Every option of every config group is shown as its YAML file, comments included: the comments
next to the values are where clplat documents its options, so the page says exactly what the
configs say and cannot drift from them. Each group starts with a table of its options, the
default marked, described by the first line of each file's leading comment.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

HIDDEN_GROUPS = ("hydra",)  # Hydra's own groups (conf/hydra/help: the --help text)
SENTENCE_END = re.compile(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)\.\s+(?=[A-Z(])")  # not "et al. (2020)"


def _defaults(train_yaml: Path) -> dict[str, object]:
    """The default option of each group, from ``train.yaml``'s defaults list."""
    out: dict[str, object] = {}
    for entry in yaml.safe_load(train_yaml.read_text()).get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if not str(key).startswith("override "):
                    out[str(key)] = value
    return out


def _summary(text: str, limit: int = 180) -> str:
    """The first sentence of a file's leading comment (``@package`` lines skipped)."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        body = stripped.lstrip("#").strip()
        if body.startswith("@package"):
            continue
        if not body and lines:
            break
        lines.append(body)
    words = " ".join(lines)
    sentence = SENTENCE_END.split(words, maxsplit=1)[0].rstrip(".")
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + " …"
    return sentence.replace("|", "\\|")


def groups(conf_dir: Path) -> dict[str, list[Path]]:
    """Every user-facing config group and its option files, sorted by name."""
    found = {}
    for group_dir in sorted(p for p in conf_dir.iterdir() if p.is_dir() and p.name not in HIDDEN_GROUPS):
        options = sorted(group_dir.glob("*.yaml"))
        if options:
            found[group_dir.name] = options
    return found


def config_reference_markdown(conf_dir: Path) -> str:
    """The whole page: top-level keys (``train.yaml``), then every group and option."""
    conf_dir = Path(conf_dir)
    train_yaml = conf_dir / "train.yaml"
    defaults = _defaults(train_yaml)
    found = groups(conf_dir)
    out = [
        "# Configuration reference",
        "",
        "Generated from `conf/` when the site is built. Choose an option with `group=option`, change "
        "any key with `group.key=value` (`clplat-train --help` lists the same groups, "
        "`clplat-train <overrides> --cfg job` prints the composed config). A `search_space:` block "
        "is read by `clplat-tune`, not passed to the class. Your own options go in your own config "
        "folder ([how-to](../howto/custom-strategy.md)).",
        "",
        "Groups: " + ", ".join(f"[`{g}`](#{g})" for g in found) + ", and the "
        "[top-level keys](#top-level-keys).",
        "",
        "## Top-level keys",
        "",
        "`conf/train.yaml`: the defaults list (which option of each group a run starts from) and the "
        "keys outside any group.",
        "",
        "```yaml",
        train_yaml.read_text().rstrip(),
        "```",
        "",
    ]
    for group, options in found.items():
        default = defaults.get(group)
        out += [f"## {group}", "", "| option | |", "|---|---|"]
        for path in options:
            mark = " (default)" if path.stem == default or (isinstance(default, list) and path.stem in default) else ""
            out.append(f"| [`{group}={path.stem}`](#{group}-{path.stem}){mark} | {_summary(path.read_text())} |")
        out.append("")
        for path in options:
            out += [f"### `{group}={path.stem}` {{#{group}-{path.stem}}}", "",
                    f"`conf/{group}/{path.name}`", "", "```yaml", path.read_text().rstrip(), "```", ""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # print the page: python docs/_mkdocs/config_reference.py
    print(config_reference_markdown(Path(__file__).resolve().parents[2] / "conf"))
