"""Run the erasekit CLI in-process and capture exit status, stdout and stderr."""

from __future__ import annotations

import sys

import pytest

from erasekit.cli import main


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    argv = sys.argv
    sys.argv = ["erasekit", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err
