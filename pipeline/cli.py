"""The ``otelsnap`` command: one subcommand per module.

Each subcommand lives in the module that does its work; that module defines
``add_arguments(parser)`` and ``main(args) -> int`` (the exit code). This
file only wires them together, so ``otelsnap --help`` lists them all.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib import metadata

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
    parser.add_argument("--version", action="version", version=f"otelsnap {package_version()}")
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


def package_version() -> str:
    """Return the installed otelsnap package's version, or "unknown" when it is not installed."""
    try:
        return metadata.version("otelsnap")
    except metadata.PackageNotFoundError:
        return "unknown"


def _selected_command(argv: list[str] | None) -> str | None:
    """Return the subcommand named on the command line, if there is one."""
    args = sys.argv[1:] if argv is None else argv
    for arg in args:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


# Exit status of a command whose standard output was closed by its reader
# (`otelsnap inspect rec | head`): 128 + SIGPIPE, as a shell reports for
# tools that the signal ends.
EXIT_STDOUT_CLOSED = 141


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
        code = int(args.handler(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()
        return EXIT_STDOUT_CLOSED
    return code


def discard_stdout() -> None:
    """Point standard output at /dev/null, so that Python's flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
