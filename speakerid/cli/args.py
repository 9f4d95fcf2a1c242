"""Argument-parsing pieces shared by :mod:`speakerid.cli.main` and :mod:`speakerid.cli.db`: the
sub-command parser (one-line usage errors, an example in every --help), argument types
(finite floats, integer sizes) and ``--threads``.
"""

from __future__ import annotations

import argparse

ARGPARSE_FORMATTER = argparse.RawDescriptionHelpFormatter


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``--help`` still shows the usage)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def subparser(sub: argparse._SubParsersAction, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A sub-command parser whose --help ends with a copy-paste example."""
    return sub.add_parser(
        name,
        help=help.replace("%", "%%"),  # argparse %-formats a choice's help (the top-level --help), not a description
        description=help,
        epilog=f"example:\n  {example}",
        formatter_class=ARGPARSE_FORMATTER,
    )


def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan`` / ``inf`` are refused)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _int_at_least(low: int):
    """argparse type: an integer >= ``low`` (sizes and counts: 0 jobs or 0 candidates is a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


positive_int = _int_at_least(1)
nonneg_int = _int_at_least(0)


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="torch threads (default: $SPEAKERID_THREADS, else usable CPUs / worker processes)")


def apply_threads(a: argparse.Namespace, workers: int = 0) -> None:
    from speakerid.distributed import apply_thread_policy

    apply_thread_policy(a.threads, workers=workers)


def add_backend(p: argparse.ArgumentParser) -> None:
    """``--backend``: what runs the encoder (speakerid.encoder_runtime)."""
    # speakerid.encoder_runtime.BACKENDS / DEFAULT_BACKEND, named here so that building the parser
    # imports no torch (eval, score, calibrate never load it); tests/test_backends.py checks they agree
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="what runs the encoder: auto (default: onnxruntime on a CPU where its graph reproduces the "
                        "eager model, else torch), torch, or onnxruntime (an error where it cannot). Same embeddings "
                        "within 1e-4; onnxruntime is 1.6x as fast as torch for CAM++ on a CPU. The graph is "
                        "exported once per model into $SPEAKERID_CACHE or ~/.cache/speakerid")
