"""The ``otelsnap`` command: one subcommand per module.

Each subcommand lives in the module that does its work; that module defines
``add_arguments(parser)`` and ``main(args) -> int`` (the exit code). This
file only wires them together, so ``otelsnap --help`` lists them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pipeline.service", "receive OTLP and run the configured pipelines"),
    "validate": ("pipeline.config", "check a config file without starting anything"),
    "replay": ("pipeline.replay", "feed a recording through the pipelines or to a receiver"),
    "record": ("pipeline.record", "receive OTLP and write every request to a recording"),
    "convert": ("pipeline.convert_cli", "turn Prometheus text scrapes into an OTLP recording"),
    "inspect": ("pipeline.inspect", "show what a recording contains"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otelsnap",
        description="Build node and SLO snapshots from OTLP metrics and deliver them to the AtlHyper Master.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    selected = _selected_command(argv)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if selected is not None and name != selected:
            continue  # import only the module of the command being run
        module = importlib.import_module(module_name)
        module.add_arguments(command)
        command.set_defaults(handler=module.main)
    return parser


def _selected_command(argv: list[str] | None) -> str | None:
    """Return the subcommand named on the command line, if there is one."""
    args = sys.argv[1:] if argv is None else argv
    for arg in args:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
