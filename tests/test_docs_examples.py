"""The configuration examples in docs/ validate as the pages show.

Each ```yaml block of the pages below is classified in BLOCKS. A full
config is written to a file and checked with ``otelsnap validate`` as the
``console`` block after it runs it: ``$ export`` lines and ``NAME=value``
prefixes set the environment, and the lines up to the next ``$`` are the
expected output. A fragment (one section) must validate when it replaces
that section of the embedded default config.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import default_config_text, load_config_text

DOCS = Path(__file__).parent.parent / "docs"
OTELSNAP = Path(sys.executable).parent / "otelsnap"

# page → kind of each ```yaml block in order: "full" (a config file with a
# console block after it), "fragment" (sections to put into the default
# config) or "other" (not an otelsnap config).
BLOCKS = {
    "configuration.md": ["full", "full"],
    "receiver.md": ["fragment", "other", "other"],
    "exporters.md": ["full", "fragment"],
}

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def fenced_blocks(page: str) -> list[tuple[str, str]]:
    return [(m[1], m[2]) for m in _FENCE.finditer((DOCS / page).read_text())]


def yaml_blocks(page: str) -> list[str]:
    return [body for language, body in fenced_blocks(page) if language == "yaml"]


def console_after_each_yaml(page: str) -> list[str | None]:
    """Return, for each yaml block, the console block that follows it (None if a yaml block comes first)."""
    result: list[str | None] = []
    blocks = fenced_blocks(page)
    for index, (language, _) in enumerate(blocks):
        if language != "yaml":
            continue
        following = blocks[index + 1] if index + 1 < len(blocks) else ("", "")
        result.append(following[1] if following[0] == "console" else None)
    return result


def validate_commands(console: str) -> list[tuple[dict[str, str], str, list[str]]]:
    """Parse a console block into (environment, config file name, expected output lines)."""
    env: dict[str, str] = {}
    commands: list[tuple[dict[str, str], str, list[str]]] = []
    for line in console.splitlines():
        if not line.startswith("$ "):
            if commands:
                commands[-1][2].append(line)
            continue
        words = shlex.split(line[2:])
        if words[0] == "export":
            env.update(word.split("=", 1) for word in words[1:])
            continue
        prefix = {}
        while "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            prefix[key] = value
        if words[:2] == ["otelsnap", "validate"]:
            commands.append(({**env, **prefix}, words[words.index("--config") + 1], []))
    return commands


def referenced_variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)", text))


def test_blocks_table_matches_pages():
    for page, kinds in BLOCKS.items():
        assert len(yaml_blocks(page)) == len(kinds), page


FULL = [
    (page, index)
    for page, kinds in BLOCKS.items()
    for index, kind in enumerate(kinds)
    if kind == "full"
]


@pytest.mark.parametrize("page, index", FULL)
def test_full_example_validates_as_shown(page, index, tmp_path):
    text = yaml_blocks(page)[index]
    console = console_after_each_yaml(page)[index]
    assert console is not None, f"{page}: yaml block {index} has no console block after it"
    commands = validate_commands(console)
    assert commands, f"{page}: the console block after yaml block {index} runs no otelsnap validate"

    for command_env, name, expected in commands:
        (tmp_path / name).write_text(text)
        env = {k: v for k, v in os.environ.items() if k not in referenced_variables(text)}
        env.update(command_env)
        result = subprocess.run(
            [str(OTELSNAP), "validate", "--config", name],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (result.stderr + result.stdout).splitlines() == expected


FRAGMENTS = [
    (page, index)
    for page, kinds in BLOCKS.items()
    for index, kind in enumerate(kinds)
    if kind == "fragment"
]


@pytest.mark.parametrize("page, index", FRAGMENTS)
def test_fragment_validates_in_default_config(page, index):
    fragment = yaml.safe_load(yaml_blocks(page)[index])
    config = yaml.safe_load(default_config_text())
    for section, components in fragment.items():
        config[section] = components
    if "exporters" in fragment:
        config["service"]["pipelines"]["node"]["exporters"] = list(fragment["exporters"])
    loaded = load_config_text(yaml.safe_dump(config), env={})
    assert loaded.warnings == []
