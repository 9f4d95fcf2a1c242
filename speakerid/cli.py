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

def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "train",
        "Train a speaker encoder (one process, or every rank of torchrun for DDP).",
        "speakerid train --config recipes/mini/conf/ecapa_circle.yaml --data data/train --exp exp/ecapa "
        "--set optim.lr=0.05\n  torchrun --nproc_per_node=2 -m speakerid train --config X.yaml --data D --exp E",
    )
    p.add_argument("--config", required=True, help="YAML training config (see speakerid/config.py: TrainConfig)")
    p.add_argument("--data", required=True, help="training data dir (wav.scp, utt2spk)")
    p.add_argument("--exp", required=True, help="experiment dir (config.yaml, checkpoints/, model.pt, train.log, tb/)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --exp")
    p.add_argument("--init-from", metavar="EXP_OR_PT", help="start from this encoder (exp dir, model.pt or checkpoint); the loss head is rebuilt")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.05 --set data.batch_size=64 (repeatable)")

    def run(args: argparse.Namespace) -> int:
        from speakerid.config import load_config
        from speakerid.train import train

        cfg = load_config(args.config, overrides=args.overrides)
        train(cfg, args.data, args.exp, resume=args.resume, init_from=args.init_from)
        return 0

    p.set_defaults(func=run)


def _add_shards(sub: argparse._SubParsersAction) -> None:
    p = _parser(
        sub,
        "shards",
        "Write a data dir as webdataset tar shards (utt id, speaker, FLAC audio) for streaming training.",
        "speakerid shards --data data/train --out data/train_shards --utts-per-shard 1000 --num-workers 4",
    )
    p.add_argument("--data", required=True, help="data dir (wav.scp, utt2spk)")
    p.add_argument("--out", required=True, help="shard dir: shard-NNNNNN.tar, shards.list, shards.json")
    p.add_argument("--utts-per-shard", type=int, default=1000, help="utterances per tar shard (default 1000)")
    p.add_argument("--sample-rate", type=int, default=16000, help="audio is resampled to this rate (default 16000)")
    p.add_argument("--format", choices=["flac", "wav"], default="flac", help="audio encoding in the shards (default flac)")
    p.add_argument("--seed", type=int, default=0, help="seed of the utterance order across shards (default 0)")
    p.add_argument("--num-workers", type=int, default=1, help="processes writing shards in parallel (default 1)")

    def run(args: argparse.Namespace) -> int:
        from speakerid.data.shards import write_shards

        out = write_shards(
            args.data, args.out, args.utts_per_shard, sample_rate=args.sample_rate,
            audio_format=args.format, seed=args.seed, num_workers=args.num_workers,
        )
        print(out)
        return 0

    p.set_defaults(func=run)


# [commands end]

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train,
    _add_shards,
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
