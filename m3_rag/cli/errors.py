"""Turning every failure into one line on stderr and an exit code; never a traceback.

Exit codes: 0 ok, 1 an error (bad input, missing model, store problem), 2 a usage error
(unknown option, bad value), 130 interrupted (Ctrl-C). ``M3_RAG_DEBUG=1`` re-raises
unexpected exceptions with their traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import click
import typer

__all__ = ["CliError", "one_line", "run_guarded", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PROG = "m3-rag"

# Errors whose message is written for the user (what was found, expected, fix): shown as is.
_EXPECTED = (ValueError, TypeError, OSError, LookupError, RuntimeError)


def _exception_modules() -> list:
    # Typer >= 0.26 vendors Click (typer._click); older releases raise click's own exceptions.
    mods = [click.exceptions, importlib.import_module(typer.BadParameter.__module__)]
    return list({id(m): m for m in mods}.values())


def _classes(name: str) -> tuple[type[Any], ...]:
    # Exception classes of Click or of Typer's copy of it: they share no base class to name here.
    return tuple(getattr(m, name) for m in _exception_modules() if hasattr(m, name))


_NO_ARGS = _classes("NoArgsIsHelpError")
_USAGE = _classes("UsageError")
_ABORT = _classes("Abort")
_CLICK = _classes("ClickException")


class CliError(Exception):
    """A user-facing error with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(message: str) -> None:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr, flush=True)


def run_guarded(call: Callable[[], object]) -> int:
    """Run a Click/Typer command in non-standalone mode and map every outcome to an exit code."""
    try:
        result = call()
    except _NO_ARGS as exc:  # bare `m3-rag`: help, not an error line
        ctx = getattr(exc, "ctx", None)
        print(ctx.get_help() if ctx is not None else exc.format_message(), file=sys.stderr)
        return EXIT_USAGE
    except _USAGE as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _error(exc.format_message() + where)
        return EXIT_USAGE
    except _ABORT:
        _error("aborted")
        return EXIT_ERROR
    except _CLICK as exc:
        _error(exc.format_message())
        return exc.exit_code
    except CliError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("M3_RAG_DEBUG"):
            raise
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, _EXPECTED):
            message = f"{type(exc).__name__}: {message} (unexpected; set M3_RAG_DEBUG=1 to see the traceback)"
        _error(message)
        return EXIT_ERROR
    # Non-standalone Click returns the command's value, or the code of an explicit exit.
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
