"""The ``erasekit`` command (typer + rich), one module per command. Bad input: one line on stderr, exit status 2."""

from __future__ import annotations

import sys

import typer

from erasekit.backbones.loader import default_world
from erasekit.cli import attack, bench, demo, erase, evaluate, export, generate  # noqa: F401 (register)
from erasekit.cli.common import app, console
from erasekit.errors import UserError

default_world().register_commands(app)  # the embedded world's own commands (ShapeWorld: classify, world ...)

__all__ = ["app", "main"]


def _quiet_libraries() -> None:
    """stderr carries our summary and one-line errors: library warnings and log chatter are silenced."""
    import os
    import warnings

    for library in ("TRANSFORMERS", "DIFFUSERS"):
        os.environ.setdefault(f"{library}_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.simplefilter("ignore")


def _usage_message(exc) -> str:
    """Click's message for a usage error, naming the nearest valid flag for an unknown one."""
    possibilities = getattr(exc, "possibilities", None)
    if getattr(exc, "option_name", None) and possibilities:  # close matches, nearest first
        return f"no such option {exc.option_name}; did you mean {possibilities[0]}?"
    return exc.format_message()


def _terminate(signum: int, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so temporary outputs are removed on the way out."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Entry point: a UserError or a usage error becomes one line on stderr and exit status 2."""
    import signal

    from rich.markup import escape
    from typer._click import exceptions as click  # typer's own click: its usage errors (typer has no public name)

    _quiet_libraries()
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        exc.show()
        code = exc.exit_code
    except (UserError, click.ClickException) as exc:
        message = _usage_message(exc) if isinstance(exc, click.ClickException) else str(exc)
        console.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)
        code = 2 if isinstance(exc, UserError) else exc.exit_code
    except typer.Abort:
        console.print("[red]interrupted[/red]", highlight=False)
        code = 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
