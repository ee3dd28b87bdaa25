"""The ``otelsnap`` command itself: --version and a standard output that
its reader closed early (``otelsnap inspect rec | head``).

Each case runs the installed command as a subprocess whose standard output
is a pipe with its read end already closed, so the first write fails with
EPIPE as it does behind ``head`` once head has exited.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
OTELSNAP = Path(sys.executable).parent / "otelsnap"
SIX_NODES_REC = ROOT / "testdata" / "six-nodes.otlprec"


def run_with_closed_stdout(*argv: str) -> subprocess.CompletedProcess:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [str(OTELSNAP), *argv], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, cwd=ROOT
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", str(SIX_NODES_REC)],
        ["inspect", "--json", str(SIX_NODES_REC)],
        ["validate"],
    ],
)
def test_closed_stdout_exits_141_quietly(argv):
    result = run_with_closed_stdout(*argv)
    assert result.returncode == 141
    assert result.stderr == ""


def test_help_to_closed_stdout_exits_0_quietly():
    # argparse ignores errors writing its help text and exits 0.
    result = run_with_closed_stdout("replay", "--help")
    assert result.returncode == 0
    assert result.stderr == ""


def test_replay_to_closed_stdout_finishes_quietly():
    result = run_with_closed_stdout("replay", str(SIX_NODES_REC))
    assert result.returncode == 0
    assert result.stderr == (
        "replayed 2 requests, 2998 points (0 rejected by the decoder, 0 invalid requests), "
        "12 node snapshots built\n"
    )


def test_version_from_package_metadata():
    result = subprocess.run([str(OTELSNAP), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout == f"otelsnap {version('otelsnap')}\n"
