"""The speaker-DB commands of ``speakerid``: enroll, verify, identify, list, remove (argument
parsing only; the work is :class:`speakerid.enroll.speaker_db.SpeakerDB`'s).

Each of them sets ``catch_all``: any error ends with one line on stderr and exit status 2
(``verify``'s 1 means "reject", so no error may end with 1).
"""

from __future__ import annotations

import argparse

from speakerid.cli.args import add_backend, add_threads, apply_threads, finite_float, positive_int, subparser


def _db_model_arg(p: argparse.ArgumentParser) -> None:
    from speakerid.pretrained import DEFAULT_MODEL

    p.add_argument("--model", "--exp", dest="model", default=DEFAULT_MODEL, metavar="EXP",
                   help=f"model: an experiment dir or a packaged name: '{DEFAULT_MODEL}' (the default: 3D-Speaker's "
                        "CAM++, see its MODEL_CARD.md) or 'starter' (the small model trained here)")
    add_threads(p)
    add_backend(p)


def _decision_args(p: argparse.ArgumentParser) -> None:
    from speakerid.enroll.decision import DEFAULT_P_TARGET
    from speakerid.enroll.rules import DEFAULT_SCORE_RULE, DEFAULT_SCORE_TOP_K, SCORE_RULES
    from speakerid.scoring.backend import BACKENDS

    p.add_argument("--threshold", type=finite_float, default=None,
                   help="accept when the decision score >= this (the LLR when the model is calibrated, else the "
                        "AS-norm score with a cohort, else the cosine); default: Bayes threshold of the model's "
                        "calibration.json, else its dev_eval.json")
    p.add_argument("--p-target", type=float, default=None,
                   help="prior of a target trial for the Bayes threshold of the model's calibration; default: the "
                        "model's measured operating point (the packaged campplus: the threshold that accepts 1%% of the "
                        "impostor trials of its dev split and misses 33%% of the genuine ones: 0-18%% on sentences, 75-77%% "
                        "on clips of 1 s or less; on trials whose two files both hold >= 1.5 s of speech, 1.7%% false "
                        "accepts and 7.3%% misses; per corpus in its MODEL_CARD.md), "
                        f"else {DEFAULT_P_TARGET}")
    p.add_argument("--score", dest="score_rule", choices=SCORE_RULES, default=DEFAULT_SCORE_RULE,
                   help="score against the mean of the speaker's enrolment embeddings, the best one, or the mean of "
                        f"the best --score-top-k (default {DEFAULT_SCORE_RULE}: best on benchmarks/bench_enroll_scoring.py)")
    p.add_argument("--score-top-k", type=positive_int, default=DEFAULT_SCORE_TOP_K,
                   help=f"k of --score topk (default {DEFAULT_SCORE_TOP_K})")
    p.add_argument("--scoring", choices=list(BACKENDS), default=None,
                   help="scoring backend (default: the one the model's calibration.json was fitted on (the default "
                        "model: csls), else asnorm when the model has cohort.npz, else cosine; plda needs plda.npz in the model dir: "
                        "speakerid train-plda)")


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output (one JSON document on stdout)")


def _print_json(obj) -> None:
    import json

    print(json.dumps(obj))


def _open_db(a: argparse.Namespace, with_model: bool = True):
    from speakerid.enroll.speaker_db import SpeakerDB

    if not with_model:
        return SpeakerDB(a.db)
    apply_threads(a)
    return SpeakerDB(a.db, a.model, p_target=getattr(a, "p_target", None), threshold=getattr(a, "threshold", None),
                     score_rule=getattr(a, "score_rule", "mean"), score_top_k=getattr(a, "score_top_k", 2),
                     scoring=getattr(a, "scoring", None), backend=getattr(a, "backend", "auto"),
                     search=getattr(a, "search", "auto"))


def _list_speakers(a: argparse.Namespace) -> int:
    with _open_db(a, with_model=False) as db:
        speakers = db.list()
    if a.json:
        _print_json([s.to_dict() for s in speakers])
    else:
        for s in speakers:
            print(f"{s.name}\t{s.num_utts} file(s)\tmodel {s.fingerprint[:12]}")
    return 0


def _remove_speakers(a: argparse.Namespace, names: list[str]) -> int:
    with _open_db(a, with_model=False) as db:
        for name in names:
            db.remove(name)
    if a.json:
        _print_json({"removed": names})
    else:
        for name in names:
            print(f"removed {name}")
    return 0


def add_enroll(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "enroll", "Enrol a speaker from audio files into a speaker DB (SQLite; every embedding is kept)",
                "speakerid enroll --model exp/ecapa --db speakers.db --speaker alice a1.wav a2.wav\n"
                "  speakerid enroll --model exp/ecapa --db speakers.db --batch enrol.txt   # 'speaker audio-file' lines")
    _db_model_arg(p)
    p.add_argument("--db", required=True, help="speaker DB file (created on first enrolment)")
    p.add_argument("--speaker", help="speaker name to enrol (adds to an existing speaker)")
    p.add_argument("wavs", nargs="*", help="audio files of the speaker")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--list", action="store_true", help="list the enrolled speakers (same as speakerid list)")
    act.add_argument("--remove", metavar="SPEAKER", help="delete a speaker (same as speakerid remove)")
    act.add_argument("--batch", metavar="FILE", help="enrol many speakers in one transaction (all or nothing) from "
                     "a list of 'speaker audio-file' lines (the file path may contain spaces; # starts a comment)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="--batch: files embedded at a time (default 64)")
    p.add_argument("--no-progress", action="store_true", help="--batch: no progress bar")
    _json_arg(p)

    def run(a: argparse.Namespace) -> int:
        if a.list:
            return _list_speakers(a)
        if a.remove:
            return _remove_speakers(a, [a.remove])
        if a.batch:
            from speakerid.enroll.inputs import read_batch_list

            if a.speaker or a.wavs:
                raise ValueError("--batch FILE takes neither --speaker nor audio files")
            pairs = read_batch_list(a.batch)
            with _open_db(a) as db:
                summary = db.add_many(pairs, batch_size=a.batch_size, progress=not a.no_progress)
            if a.json:
                _print_json(summary)
            else:
                print(f"enrolled {summary['embeddings']} file(s) of {summary['speakers']} speaker(s)")
            return 0
        if not a.speaker or not a.wavs:
            raise ValueError("enrolment needs --speaker NAME and at least one audio file (or --list / --remove)")
        with _open_db(a) as db:
            info = db.enroll(a.speaker, a.wavs)
        if a.json:
            _print_json(info.to_dict())
        else:
            print(f"enrolled {info.name}: {info.num_utts} file(s) in total")
        return 0

    p.set_defaults(func=run, catch_all=True)


def add_list(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "list", "List the speakers of a speaker DB (read-only)", "speakerid list --db speakers.db --json")
    p.add_argument("--db", required=True, help="speaker DB file")
    _json_arg(p)
    p.set_defaults(func=_list_speakers, catch_all=True)


def add_remove(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "remove", "Delete speakers (and their stored embeddings) from a speaker DB",
                "speakerid remove --db speakers.db alice bob")
    p.add_argument("--db", required=True, help="speaker DB file")
    p.add_argument("speakers", nargs="+", help="speaker names")
    _json_arg(p)
    p.set_defaults(func=lambda a: _remove_speakers(a, a.speakers), catch_all=True)


def add_verify(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "verify", "Is this the claimed speaker? prints the score and the decision; "
                "exit status 0 accept, 1 reject, 2 error (with --trials: 0 done, 2 error). The default decision of the "
                "packaged default model accepted 1% of the impostors and 67% of the genuine speakers of its dev "
                "split (sentences: 82-100%; clips with >= 1.5 s of speech each: 1.7% and 93%; see --p-target)",
                "speakerid verify --model exp/ecapa --db speakers.db --speaker alice test.wav\n"
                "  speakerid verify --db speakers.db --trials trials.txt --output scores.txt   # 'speaker audio [label]' lines")
    _db_model_arg(p)
    p.add_argument("--db", required=True, help="speaker DB file")
    p.add_argument("--speaker", help="claimed speaker")
    p.add_argument("wav", nargs="?", help="test audio file")
    p.add_argument("--trials", help="score many trials: a list of 'speaker audio-file [target|nontarget]' lines")
    p.add_argument("--output", help="--trials: score file to write ('speaker audio score [label]')")
    p.add_argument("--decisions", help="--trials: decisions file (default OUTPUT.decisions)")
    p.add_argument("--no-progress", action="store_true", help="--trials: no progress bar")
    _decision_args(p)
    _json_arg(p)

    def run(a: argparse.Namespace) -> int:
        if a.trials:
            if a.speaker or a.wav or not a.output:
                raise ValueError("--trials FILE takes --output SCORES and neither --speaker nor an audio file")
            with _open_db(a) as db:
                summary = db.verify_trials(a.trials, a.output, a.decisions, progress=not a.no_progress)
            if a.json:
                _print_json(summary)
            else:
                errors = (f"; {summary['false_accepts']} false accepts, {summary['misses']} misses"
                          if "misses" in summary else "")
                print(f"{summary['trials']} trials: {summary['accepted']} accepted, {summary['rejected']} rejected"
                      f"{errors}; scores in {summary['scores']}, decisions in {summary['decisions']}")
            return 0
        if not a.speaker or not a.wav:
            raise ValueError("verify needs --speaker NAME and a test audio file (or --trials FILE --output SCORES)")
        with _open_db(a) as db:
            r = db.verify(a.speaker, a.wav)
        if a.json:
            _print_json(r.to_dict())
        else:
            extra = "".join(f" {k}={v:.3f}" for k, v in ((r.score_kind, r.backend_score), ("llr", r.llr)) if v is not None)
            print(f"{'accept' if r.accept else 'reject'} {r.speaker} {r.test} cosine={r.score:.4f}{extra} "
                  f"threshold={r.threshold:.4f} ({r.threshold_source})")
        return 0 if r.accept else 1

    p.set_defaults(func=run, catch_all=True)


def add_identify(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "identify", "Who is speaking? open-set: the best enrolled speaker if it reaches the threshold, "
                "else 'unknown'; --top-k candidates with scores. Exit status 0 for an answer, 'unknown' included "
                "(the first line, or 'decision' in --json); 2 on bad input",
                "speakerid identify --model exp/ecapa --db speakers.db --top-k 3 test.wav")
    _db_model_arg(p)
    p.add_argument("--db", required=True, help="speaker DB file")
    p.add_argument("wav", help="test audio file")
    p.add_argument("--top-k", type=positive_int, default=5, help="how many candidates to list (default 5)")
    p.add_argument("--exact", action="store_true",
                   help="score every speaker from the DB rows instead of ranking through the speaker index "
                        "(the same answer, slower; the reference the index is tested against)")
    p.add_argument("--search", choices=["auto", "exact", "ann"], default="auto",
                   help="rank through the speaker index by one matrix product (exact), or by binary codes beside "
                        "the DB, <db>.index.codes, scanned by faiss and built at first use (ann: pip install "
                        "faiss-cpu); auto "
                        "(default): ann from 50,000 speakers when faiss is installed, else exact")
    _decision_args(p)
    _json_arg(p)

    def run(a: argparse.Namespace) -> int:
        with _open_db(a) as db:
            r = db.identify(a.wav, top_k=a.top_k, exact=a.exact)
        if a.json:
            _print_json(r.to_dict())
        else:
            print(f"{r.decision}\t(threshold {r.threshold:.4f}, {r.threshold_source})")
            for rank, m in enumerate(r.candidates, 1):
                extra = "".join(f"\t{k}={v:.3f}" for k, v in ((r.score_kind, m.backend_score), ("llr", m.llr)) if v is not None)
                print(f"{rank}\t{m.speaker}\tcosine={m.score:.4f}{extra}")
        return 0

    p.set_defaults(func=run, catch_all=True)
