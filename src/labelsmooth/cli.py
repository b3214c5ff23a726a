"""The ``labelsmooth`` command's entry point: ``labelsmooth compare`` and ``labelsmooth explain``.

The commands (:mod:`labelsmooth._cli`) need the ``cli`` extra; without it the
command says so in one line instead of a traceback. Bad input ends with one
line on standard error (``labelsmooth: error: <what is wrong>``) and exit
status 2.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

__all__ = ["main", "missing_extra"]

USAGE_ERROR = 2
INTERRUPTED = 130
#: Options that take several values (``--alphas 0 0.1 0.2``); click takes one, so
#: :func:`main` joins the values that follow into one comma-separated token.
VARIADIC = ("--alphas",)
#: Options that take several values each given to click as its own ``--runs PATH`` (paths may hold commas).
REPEATED = ("--runs",)
#: What the commands import: click for both, the rest for compare.
EXTRA = {
    "explain": ("click",),
    "compare": ("click", "tqdm", "matplotlib", "sklearn", "scipy", "pandas", "PIL"),
}


def missing_extra(args: Sequence[str]) -> str | None:
    """The one-line message when a module of the ``cli`` extra that ``args``' command needs is missing."""
    command = next((a for a in args if a in EXTRA), None)
    needed = EXTRA[command] if command is not None else ("click",)
    if all(importlib.util.find_spec(name) is not None for name in needed):
        return None
    name = "labelsmooth" + (f" {command}" if command else "")
    return f'{name} needs the cli extra: pip install "labelsmooth[cli]"'


def _join_variadic(args: Sequence[str]) -> list[str]:
    """``--alphas 0 0.1`` -> ``--alphas 0,0.1``; ``--runs a b`` -> ``--runs a --runs b``."""
    joined: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in REPEATED:
            flag = args[i]
            while i + 1 < len(args) and not args[i + 1].startswith("--"):
                joined += [flag, args[i + 1]]
                i += 1
            i += 1
            continue
        joined.append(args[i])
        if args[i] in VARIADIC:
            values = []
            while i + 1 < len(args) and not args[i + 1].startswith("--"):
                values.append(args[i + 1])
                i += 1
            joined.append(",".join(values))
        i += 1
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m labelsmooth``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    message = missing_extra(args)
    if message is not None:
        print(message, file=sys.stderr)
        return USAGE_ERROR
    import click

    from labelsmooth._cli import UsageError, cli

    try:
        # Without standalone mode, click returns a command's exit status (Exit) instead of exiting.
        status = cli.main(args=_join_variadic(args), prog_name="labelsmooth", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.exceptions.Abort:
        click.echo("labelsmooth: aborted", err=True)
        return INTERRUPTED
    except click.ClickException as error:
        click.echo(f"labelsmooth: error: {error.format_message()}".splitlines()[0], err=True)
        return USAGE_ERROR
    except UsageError as error:
        click.echo(f"labelsmooth: error: {error}".splitlines()[0], err=True)
        return USAGE_ERROR
    return status if isinstance(status, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
