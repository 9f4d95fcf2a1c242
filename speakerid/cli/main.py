"""The ``speakerid`` command: argument parsing only; all work is done by library functions.

Each command is one ``_add_<name>`` function that declares its arguments (with an example
in its help) and sets ``func`` to a small runner that calls the library. User errors
(``ValueError``/``OSError`` raised by the library with a message naming the file and the
problem) are printed as one line and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from speakerid import __version__
from speakerid.cli.args import Parser, add_backend, add_threads, apply_threads, nonneg_int, positive_int, subparser
from speakerid.cli.db import add_enroll as _add_enroll, add_identify as _add_identify
from speakerid.cli.db import add_list as _add_list, add_remove as _add_remove, add_verify as _add_verify
from speakerid.scoring.backend import BACKENDS


# --- commands ---------------------------------------------------------------------------
# Each block below belongs to one command; keep them independent.

def _add_train(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub,
        "train",
        "Train a speaker encoder (one process, or every rank of torchrun for DDP).",
        "speakerid train --config recipes/mini/conf/ecapa_circle.yaml --data data/train --exp exp/ecapa "
        "--set optim.lr=0.05\n  speakerid train --config recipes/pretrained/conf/finetune_circle.yaml --data D --exp E --init EXP\n  torchrun --nproc_per_node=2 -m speakerid train --config X.yaml --data D --exp E",
    )
    p.add_argument("--config", required=True, help="YAML training config (see speakerid/config.py: TrainConfig)")
    p.add_argument("--data", required=True, help="training data dir (wav.scp, utt2spk)")
    p.add_argument("--exp", required=True, help="experiment dir (config.yaml, checkpoints/, model.pt, train.log, tb/)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --exp")
    p.add_argument("--init", "--init-from", dest="init_from", metavar="EXP",
                   help="fine-tune: start from this encoder (experiment dir, imported or packaged model such as "
                        "'starter', model.pt or checkpoint); the config's model: section must match its; "
                        "AAM / proxy class weights start at the speakers' mean embeddings")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.05 --set data.batch_size=64 (repeatable)")

    def run(args: argparse.Namespace) -> int:
        from speakerid.config import load_config
        from speakerid.train.trainer import train

        cfg = load_config(args.config, overrides=args.overrides)
        train(cfg, args.data, args.exp, resume=args.resume, init_from=args.init_from, threads=args.threads)
        return 0

    add_threads(p)
    p.set_defaults(func=run)


def _add_shards(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub,
        "shards",
        "Write a data dir as webdataset tar shards (utt id, speaker, FLAC audio) for streaming training.",
        "speakerid shards --data data/train --out data/train_shards --utts-per-shard 1000 --num-workers 4",
    )
    p.add_argument("--data", required=True, help="data dir (wav.scp, utt2spk)")
    p.add_argument("--out", required=True, help="shard dir: shard-NNNNNN.tar, shards.list, shards.json")
    p.add_argument("--utts-per-shard", type=positive_int, default=1000, help="utterances per tar shard (default 1000)")
    p.add_argument("--sample-rate", type=positive_int, default=16000, help="audio is resampled to this rate (default 16000)")
    p.add_argument("--format", choices=["flac", "wav"], default="flac", help="audio encoding in the shards (default flac)")
    p.add_argument("--seed", type=int, default=0, help="seed of the utterance order across shards (default 0)")
    p.add_argument("--num-workers", type=positive_int, default=1, help="processes writing shards in parallel (default 1)")

    def run(args: argparse.Namespace) -> int:
        from speakerid.data.shards import write_shards

        out = write_shards(
            args.data, args.out, args.utts_per_shard, sample_rate=args.sample_rate,
            audio_format=args.format, seed=args.seed, num_workers=args.num_workers,
        )
        print(out)
        return 0

    p.set_defaults(func=run)


# --- extract / enroll / verify / identify / export ---------------------------------------------
def _model_arg(p: argparse.ArgumentParser) -> None:
    from speakerid.pretrained import DEFAULT_MODEL

    p.add_argument("--model", "--exp", dest="model", default=DEFAULT_MODEL, metavar="EXP",
                   help=f"experiment dir (config.yaml + model.pt) or packaged model name (default {DEFAULT_MODEL!r}; "
                        "'starter': the small model trained here)")


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "extract", "Embed every utterance of a data dir (whole utterances; resumable; torchrun for many processes)",
                "speakerid extract --exp exp/ecapa --data data/test --out exp/ecapa/emb_test")
    _model_arg(p)
    p.add_argument("--data", required=True, help="data dir (wav.scp, utt2spk; utt2dur speeds up the sort)")
    p.add_argument("--out", required=True, help="output dir: embeddings.npz and embedding.scp/.ark")
    p.add_argument("--format", nargs="+", default=["npz", "scp"], choices=["npz", "scp"], help="formats to write (default both)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="segments per forward pass (default 16)")
    p.add_argument("--chunk-utts", type=positive_int, default=256, help="utterances per saved chunk: the resume granularity (default 256)")
    p.add_argument("--num-workers", type=nonneg_int, default=0, help="audio-reading worker processes (default 0)")
    p.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if available), cpu, cuda:0, ...")
    p.add_argument("--max-window", type=float, default=20.0, help="longer utterances: mean of equal windows of at most this many s (default 20)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_backend(p)

    def run(a: argparse.Namespace) -> int:
        import os

        from speakerid.extract import extract_embeddings

        written = extract_embeddings(
            a.model, a.data, a.out, batch_size=a.batch_size, chunk_utts=a.chunk_utts, num_workers=a.num_workers,
            device=a.device, max_window_seconds=a.max_window, formats=a.format,
            progress=not a.no_progress, threads=a.threads, backend=a.backend,
        )
        if int(os.environ.get("RANK", "0")) == 0:
            print(" ".join(str(w) for w in written))
        return 0

    add_threads(p)
    p.set_defaults(func=run)


def _add_train_plda(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "train-plda", "Train a two-covariance PLDA scoring backend (LDA + length norm + PLDA) on "
                  "embeddings with speaker labels; put it in the model dir as plda.npz for --scoring plda",
                  "speakerid train-plda --embeddings exp/campplus/emb_train --utt2spk data/train/utt2spk "
                  "--out exp/campplus/plda.npz --lda-dim 128")
    p.add_argument("--embeddings", required=True, help="training embeddings (.npz, Kaldi .scp/.ark, or an extract dir)")
    p.add_argument("--utt2spk", required=True, help="Kaldi utt2spk of those utterances (the speaker labels)")
    p.add_argument("--out", required=True, help="PLDA file to write (atomically), e.g. EXP/plda.npz")
    p.add_argument("--lda-dim", type=positive_int, default=None, help="LDA to this dimension first (default: none)")
    p.add_argument("--iters", type=nonneg_int, default=10, help="EM iterations (default 10)")

    def run(a: argparse.Namespace) -> int:
        from speakerid.scoring.plda_train import train_plda

        s = train_plda(a.embeddings, a.utt2spk, a.out, a.lda_dim, a.iters)
        print(f"PLDA of {s['utterances']} utterances, {s['speakers']} speakers ({s['speakers_2plus']} with 2+), "
              f"dimension {s['dim']} -> {s['plda_dim']}: {s['out']}")
        return 0

    p.set_defaults(func=run)


from speakerid.cli.serve import add_keys as _add_keys, add_serve as _add_serve  # noqa: E402


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "export", "Export waveform -> fbank -> CMN -> encoder -> embedding as TorchScript or ONNX (checked against the eager model)",
                "speakerid export --model exp/ecapa --out exp/ecapa/embedder.ts")
    _model_arg(p)
    p.add_argument("--out", required=True, help="output file (*.onnx -> ONNX, else TorchScript)")
    p.add_argument("--format", choices=["torchscript", "onnx"], default=None, help="override the format given by --out")
    p.add_argument("--atol", type=float, default=1e-4, help="max abs difference to the eager model (default 1e-4)")

    def run(a: argparse.Namespace) -> int:
        from speakerid.export import export_model

        print(export_model(a.model, a.out, a.format, a.atol))
        return 0

    p.set_defaults(func=run)


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub,
        "score",
        "Score a trial list from embeddings by a scoring backend (cosine, S-/AS-norm, CSLS, PLDA; optional "
        "mean subtraction), or as a model decides (--model: its backend, cohort and top-k); writes "
        "'enroll test score [label]' lines.",
        "speakerid score --model campplus --trials data/test/trials --embeddings exp/emb_test "
        "--output exp/scores.txt  # embeddings of speakerid extract --data data/test --out exp/emb_test\n"
        "  speakerid score --trials data/trials.txt --embeddings exp/ecapa/embeddings/test "
        "--cohort exp/ecapa/embeddings/train/embeddings.npz --scoring asnorm --top-k 300 --output exp/ecapa/scores.txt\n"
        "  speakerid score --trials data/trials.txt --embeddings exp/ecapa/embeddings/test "
        "--scoring plda --plda exp/ecapa/plda.npz --output exp/ecapa/scores_plda.txt",
    )
    p.add_argument("--trials", required=True, help="trial list: '1 enroll test' (VoxCeleb), 'enroll test target|nontarget' (Kaldi) or 'enroll test'")
    p.add_argument("--embeddings", required=True, help="embeddings (.npz, Kaldi .scp/.ark, or a dir holding embeddings.npz / embedding.scp)")
    p.add_argument("--enroll-embeddings", help="separate embeddings for the enroll ids (default: --embeddings)")
    p.add_argument("--cohort", help="cohort embeddings for --scoring snorm/asnorm/csls (e.g. training utterances)")
    p.add_argument("--model", help="score as this model decides (packaged name or experiment dir whose "
                                   "embeddings these are): the backend its calibration.json was fitted on, its "
                                   "cohort.npz and top-k, its plda.npz (the default model: csls, top 20)")
    p.add_argument("--scoring", choices=list(BACKENDS), help="scoring backend (default cosine, or --model's)")
    p.add_argument("--norm", choices=["none", "snorm", "asnorm"], help="the older spelling of --scoring (none = cosine)")
    p.add_argument("--plda", metavar="NPZ", help="--scoring plda: the PLDA model (plda.npz of speakerid train-plda)")
    p.add_argument("--top-k", type=positive_int, help="asnorm / csls: highest cohort scores used per side "
                                                      "(default 300, or --model's)")
    p.add_argument("--subtract-mean", metavar="EMB", help="subtract the mean of these embeddings before length normalisation")
    p.add_argument("--output", required=True, help="score file to write (atomically)")

    def run(args: argparse.Namespace) -> int:
        from speakerid.scoring.norm import DEFAULT_TOP_K
        from speakerid.experiment import model_scoring
        from speakerid.scoring.trial_scores import score_files, scoring_name

        names = {scoring_name(n) for n in (args.scoring, args.norm) if n is not None}
        if len(names) > 1:
            raise ValueError(f"--scoring {args.scoring} and --norm {args.norm} disagree; give --scoring only")
        scoring, cohort, top_k, plda = (names.pop() if names else None), args.cohort, args.top_k, args.plda
        if args.model is not None:
            m = model_scoring(args.model)
            scoring, cohort, top_k, plda = scoring or m.scoring, cohort or m.cohort, top_k or m.top_k, plda or m.plda
        sl = score_files(
            args.trials, args.embeddings, args.output, enroll_embeddings=args.enroll_embeddings,
            cohort=cohort, scoring=scoring or "cosine", top_k=top_k or DEFAULT_TOP_K,
            subtract_mean=args.subtract_mean, plda=plda,
        )
        print(f"{len(sl)} scores written to {args.output} ({scoring or 'cosine'})")
        return 0

    p.set_defaults(func=run)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub,
        "eval",
        "EER, minDCF@0.01 and minDCF@0.05 of a score file (plus actDCF and Cllr with --calibrated); "
        "optional DET curve and score histogram.",
        "speakerid eval --scores exp/ecapa/scores.txt --det exp/ecapa/det.png --hist exp/ecapa/hist.png\n"
        "  speakerid eval --scores scores_nolabels.txt --trials data/trials.txt --json",
    )
    p.add_argument("--scores", required=True, help="score file 'enroll test score [label]'")
    p.add_argument("--trials", help="labelled trial list (needed when the score file has no label column)")
    p.add_argument("--det", metavar="PNG", help="write the DET curve here")
    p.add_argument("--hist", metavar="PNG", help="write target/non-target score histograms here")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    p.add_argument("--calibrated", action="store_true", help="scores are LLRs: also report actDCF and Cllr")

    def run(args: argparse.Namespace) -> int:
        import json

        from speakerid.scoring.evaluate import evaluate_score_file
        from speakerid.scoring.metrics import format_metrics

        m = evaluate_score_file(args.scores, args.trials, args.det, args.hist, args.calibrated)
        print(json.dumps(m.to_dict(), indent=2) if args.json else format_metrics(m))
        return 0

    p.set_defaults(func=run)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub,
        "calibrate",
        "Fit a linear score -> LLR calibration (logistic regression) on labelled dev scores, or apply one.",
        "speakerid calibrate --scores exp/ecapa/dev_scores.txt --output exp/ecapa/calibration.json\n"
        "  speakerid calibrate --apply exp/ecapa/calibration.json --scores exp/ecapa/scores.txt "
        "--output exp/ecapa/scores.calibrated",
    )
    p.add_argument("--scores", required=True, help="score file 'enroll test score [label]'")
    p.add_argument("--trials", help="labelled trial list (when the score file has no label column)")
    p.add_argument("--apply", metavar="JSON", help="apply this calibration instead of fitting one")
    p.add_argument("--prior", type=float, help="fit: effective target prior of the training (default: the dev list's)")
    p.add_argument("--score-kind", choices=list(BACKENDS), default="cosine",
                   help="fit: what the scores are, stored so that verify applies the map to the same kind (default cosine)")
    p.add_argument("--target-fa", type=float, metavar="RATE",
                   help="fit: also store the default operating point of verify / identify: the threshold that accepts "
                        "this fraction of the dev non-target trials (e.g. 0.01); default: none (Bayes threshold at --p-target)")
    p.add_argument("--output", required=True, help="fit: calibration JSON; --apply: calibrated score file")

    def run(args: argparse.Namespace) -> int:
        from speakerid.scoring.calibrate import apply_calibration_file, calibrate_score_file

        if args.apply:
            if args.prior is not None or args.target_fa is not None:
                raise ValueError("--prior / --target-fa only apply when fitting (without --apply)")
            cal, report = apply_calibration_file(args.apply, args.scores, args.output, args.trials)
            print(f"llr = {cal.a:.6g} * score + {cal.b:.6g} applied; written to {args.output}")
        else:
            cal, report = calibrate_score_file(args.scores, args.output, args.trials, args.prior, args.score_kind,
                                               args.target_fa)
            print(f"llr = {cal.a:.6g} * score + {cal.b:.6g} (prior {cal.prior:.4g}) saved to {args.output}")
            if cal.default_p_target is not None:
                from speakerid.scoring.metrics import bayes_threshold

                print(f"default operating point: P_target {cal.default_p_target:.4g} (llr >= "
                      f"{bayes_threshold(cal.default_p_target):.3f}), {cal.target_fa:g} of the dev "
                      "non-target trials accepted")
        for name, row in (report or {}).items():
            print(f"{name:<7}" + "  ".join(f"{k} {v:.4f}" for k, v in row.items()))
        return 0

    p.set_defaults(func=run)


# --- features -----------------------------------------------------------------------------------
def _add_features(sub: argparse._SubParsersAction) -> None:
    p = subparser(
        sub,
        "features",
        "Compute raw log-mel fbank (no CMN, no dither) of a data dir into Kaldi ark/scp: "
        "DIR/feats/raw_fbank.KEY.N.ark shards + DIR/feats.scp. Resumable: finished shards are kept.",
        "speakerid features --data data/train --config recipes/mini/conf/ecapa_circle.yaml --nj 4",
    )
    p.add_argument("--data", required=True, help="data dir (wav.scp, utt2spk); feats.scp is written into it")
    p.add_argument("--config", help="YAML config whose 'features' section is used (default: FeatureConfig defaults)")
    p.add_argument("--nj", type=positive_int, default=1, help="parallel worker processes, one shard per job (default 1)")
    p.add_argument("--out", help="folder for the ark/scp shards (default DIR/feats)")
    p.add_argument("--utts-per-shard", type=positive_int, default=1000, help="max utterances per shard (default 1000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(args: argparse.Namespace) -> int:
        from speakerid.config import FeatureConfig, load_config
        from speakerid.data.feature_cache import compute_features_for_data_dir

        cfg = load_config(args.config).features if args.config else FeatureConfig()
        apply_threads(args, workers=args.nj if args.nj > 1 else 0)
        scp = compute_features_for_data_dir(
            args.data, args.out, cfg, num_workers=args.nj, utts_per_shard=args.utts_per_shard,
            progress=not args.no_progress,
        )
        print(scp)
        return 0

    add_threads(p)
    p.set_defaults(func=run)


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "import", "Import another toolkit's checkpoint as an experiment dir (config.yaml + model.pt) "
                "that extract / enroll / verify / identify / export use",
                "speakerid import --from wespeaker --checkpoint resnet34/avg_model.pt --config resnet34/config.yaml "
                "--out exp/ws_resnet34\n  speakerid import --from speechbrain --checkpoint sb/embedding_model.ckpt "
                "--config sb/hyperparams.yaml --out exp/sb_ecapa\n  speakerid import --from 3dspeaker --checkpoint campplus_cn_en_common.pt "
                "--out exp/campplus")
    p.add_argument("--from", dest="source", required=True, choices=["wespeaker", "speechbrain", "3dspeaker", "onnx"], help="source toolkit")
    p.add_argument("--checkpoint", required=True, help="WeSpeaker avg_model.pt, SpeechBrain embedding_model.ckpt, "
                   "3D-Speaker *.pt / embedding_model.ckpt (a state dict), or model.onnx")
    p.add_argument("--config", help="WeSpeaker's config.yaml, SpeechBrain's hyperparams.yaml; optional for 3dspeaker (its "
                   "training YAML or ModelScope configuration.json) and onnx")
    p.add_argument("--norm-stats", help="SpeechBrain only: mean_var_norm_emb.ckpt (subtract its global embedding mean)")
    p.add_argument("--out", required=True, help="experiment dir to write (new or empty unless --force)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--window-type", choices=["povey", "hamming", "hanning", "rectangular"],
                   help="WeSpeaker only: override the fbank window (default: what its inference uses)")
    p.add_argument("--wave-scale", choices=["int16", "float"], help="WeSpeaker only: override the wave scale")

    def run(a: argparse.Namespace) -> int:
        from speakerid.interop import import_model

        print(import_model(a.source, a.out, checkpoint=a.checkpoint, config=a.config, force=a.force,
                           norm_stats=a.norm_stats, window_type=a.window_type, wave_scale=a.wave_scale))
        return 0

    p.set_defaults(func=run)



COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train,
    _add_shards,
    _add_extract,
    _add_enroll,
    _add_verify,
    _add_identify,
    _add_list,
    _add_remove,
    _add_export,
    _add_score,
    _add_train_plda,
    _add_eval,
    _add_calibrate,
    _add_features,
    _add_import,
    _add_serve,
    _add_keys,
    # [registry end]
]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="speakerid",
        description="Speaker verification toolkit: features, training, embeddings, scoring, enrolment.",
    )
    parser.add_argument("--version", action="version", version=f"speakerid {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse's usage errors (2) and --help (0) as return values, like every other outcome
        return e.code if isinstance(e.code, int) else 2
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
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`speakerid list | head -1`): quiet, as SIGPIPE would be
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141
    except (ValueError, OSError) as e:
        if args.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"speakerid {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"speakerid {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - commands with catch_all: an error is never exit status 1
        if args.debug or not getattr(args, "catch_all", False):
            raise
        print(f"speakerid {args.command}: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(--debug shows the traceback)", file=sys.stderr)
        return 2
    return int(rc or 0)
