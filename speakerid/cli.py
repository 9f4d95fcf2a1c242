"""The ``speakerid`` command: argument parsing only; all work is done by library functions.

Each command is one ``_add_<name>`` function that declares its arguments (with an example
in its help) and sets ``func`` to a small runner that calls the library. User errors
(``ValueError``/``OSError`` raised by the library with a message naming the file and the
problem) are printed as one line and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from speakerid import __version__

ARGPARSE_FORMATTER = argparse.RawDescriptionHelpFormatter


def _parser(sub: argparse._SubParsersAction, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A sub-command parser whose --help ends with a copy-paste example."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=f"example:\n  {example}",
        formatter_class=ARGPARSE_FORMATTER,
    )


# --- commands ---------------------------------------------------------------------------
# Each block below belongs to one command; keep them independent.

# [commands end]

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    # [registry end]
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speakerid",
        description="Speaker verification toolkit: features, training, embeddings, scoring, enrolment.",
    )
    parser.add_argument("--version", action="version", version=f"speakerid {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        rc = args.func(args)
    except (ValueError, OSError) as e:
        if args.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"speakerid {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"speakerid {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
