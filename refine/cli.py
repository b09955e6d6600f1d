"""`refine`: command-line entry point."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from refine import LOG_FORMAT, __version__

DESCRIPTION = """\
A RefinedWeb-style web-corpus refinery: WARC (or WET, JSONL, Parquet) in, filtered Parquet out,
with every dropped record written to RUN/rejected/ with its stage and reason."""

RUN_EPILOG = """\
The run directory holds data/ (kept documents, Parquet), rejected/ (one row per dropped
record, with the id it duplicates for dedup), spans/ (substrings cut by exact dedup),
filtered/ (documents after stages 1-7, before dedup), dedup/urls.parquet (kept URLs, for a
later run's dedup.urls.previous_runs), stats.json (per stage: in/out, reasons, CPU) and
manifest.json (resolved config and its hash, inputs, versions, per-input completion).

examples:
  refine run configs/refinedweb.yaml --input 'crawl/*.warc.gz' --output runs/cc
  refine run configs/demo.yaml --input tests/data/warc/*.warc.gz --output runs/demo --workers 2
  refine run configs/refinedweb.yaml --input s3://bucket/warc/*.warc.gz --output runs/s3 \\
      --address auto      # on an existing Ray cluster
"""

CLASSIFIER_EPILOG = """\
examples:
  refine classifier train --positive refine/data/ablation-curated.jsonl.gz \\
      tests/data/text/lee-news-background.txt --negative runs/demo/data --out models/quality.npz
then in a config:
  classifier:
    enabled: true
    model: models/quality.npz
    threshold: 0.5          # or top_fraction: 0.1
"""

EXIT_OK, EXIT_ERROR, EXIT_STRICT, EXIT_INTERRUPTED = 0, 2, 3, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refine", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"refine {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (errors in your input or setup are "
                             "otherwise one line: 'error: ...')")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the refinement DAG over inputs into a run directory",
        description="Run RefinedWeb's MacroData Refinement on Ray: stages 1-7 per work "
        "unit, then the whole-run dedup stages 8-10 (MinHash, exact substrings, URLs).",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", help="YAML config (see configs/refinedweb.yaml)")
    run.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH_OR_GLOB",
                     help="input files or globs: .warc[.gz], .wet[.gz], .jsonl[.gz], .parquet; "
                          "local paths or s3://, gs:// URLs")
    run.add_argument("--output", "-o", required=True, metavar="RUN", help="run directory")
    run.add_argument("--address", default=None,
                     help="run on Ray: a cluster's address ('auto' or host:port), or 'local' "
                     "to start a Ray of our own; default: local worker processes, no Ray")
    run.add_argument("--connect-timeout", type=float, default=60.0, metavar="S",
                     help="give up on an unreachable --address after S seconds (default: 60)")
    run.add_argument("--workers", type=int, default=2,
                     help="worker processes (Ray actors with --address), each holding its "
                     "models once (default: 2)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run: finished units are not processed again")
    run.add_argument("--overwrite", action="store_true", help="delete RUN first if it exists")
    run.add_argument("--strict", action="store_true",
                     help=f"exit {EXIT_STRICT} when any record was corrupt or truncated")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    stats = commands.add_parser("stats", help="print a run's statistics")
    stats.add_argument("run_dir", metavar="RUN")
    stats.add_argument("--json", action="store_true", help="print stats.json as JSON")

    report = commands.add_parser(
        "report", help="write RUN/report.html: what the run removed, why, and what-if thresholds",
        description="Turn a run directory into one self-contained HTML page (no request leaves "
        "it): the funnel, drops by stage and reason with sampled examples, metric "
        "distributions with what-if thresholds, languages, dedup, throughput, config, inputs "
        "and the accounting check. Reads only the run directory.")
    report.add_argument("run_dir", metavar="RUN")
    report.add_argument("--output", "-o", metavar="PATH", help="default: RUN/report.html")
    report.add_argument("--samples", type=int, default=5, metavar="N",
                        help="examples shown per stage and reason (default: 5)")
    report.add_argument("--seed", type=int, default=0, help="seed of the example sample")
    report.add_argument("--ablation", metavar="DIR", default=None,
                        help="a `python -m pretrain.ablate` output directory to show (default: "
                             "ablation.json in RUN or its parent, if there)")

    blocklist = commands.add_parser("blocklist", help="manage the UT1 domain blocklist")
    block_commands = blocklist.add_subparsers(dest="blocklist_command", required=True)
    update = block_commands.add_parser(
        "update", help="download UT1's current lists (needs internet) into a directory")
    update.add_argument("--dest", required=True, help="directory for ut1-domains.txt.xz etc.; "
                        "point url.blocklist_path in your config at it")
    update.add_argument("--categories", nargs="+", metavar="CATEGORY",
                        help="UT1 categories (default: the ten FineWeb blocks)")
    update.add_argument("--base-url", help="download URL with {category}; a file:// URL "
                        "reads tarballs downloaded elsewhere (default: UT1's server)")
    build_cache = block_commands.add_parser(
        "build-cache", help="build (or check) the domain list's hash cache, so that workers "
        "only map it ($REFINE_CACHE_DIR, default ~/.cache/refine)")
    build_cache.add_argument("path", nargs="?", help="domain list, or a directory from "
                             "'blocklist update' (default: the packaged UT1 list)")

    classifier = commands.add_parser(
        "classifier", help="train a quality classifier for the config's classifier: stage")
    classifier_commands = classifier.add_subparsers(dest="classifier_command", required=True)
    train = classifier_commands.add_parser(
        "train", help="train a fastText-style bigram classifier (numpy): positives (text you "
        "trust) against negatives (e.g. a run's data/); prints held-out precision/recall/F1",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CLASSIFIER_EPILOG)
    train.add_argument("--positive", nargs="+", required=True, metavar="FILE",
                       help="curated text: .txt (a document per line), .jsonl, .parquet, or a "
                            "directory of .parquet/.jsonl files")
    train.add_argument("--negative", nargs="+", required=True, metavar="FILE",
                       help="raw web text, the same formats; a run directory reads its data/")
    train.add_argument("--out", required=True, metavar="MODEL",
                       help="model file (.npz); the evaluation goes beside it (.eval.json)")
    # refine.quality_classifier.TrainConfig's defaults (not imported: --help stays fast)
    train.add_argument("--dim", type=int, default=32, help="embedding size (default 32)")
    train.add_argument("--buckets", type=int, default=1 << 18,
                       help="hash buckets for words and bigrams (default 2^18)")
    train.add_argument("--epochs", type=int, default=5, help="default 5")
    train.add_argument("--lr", type=float, default=1.0,
                       help="initial learning rate, decaying linearly to 0 (default 1.0)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--holdout", type=float, default=0.1,
                       help="fraction held out for the evaluation, by hash of the text "
                            "(default 0.1)")
    train.add_argument("--max-docs", type=int, default=None,
                       help="read at most this many documents per side")
    return parser


def _command_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from refine.config import load_config
    from refine.run import run

    config = load_config(args.config)  # fails before any work starts
    bar = None if args.quiet else tqdm(unit="unit", desc="refine", dynamic_ncols=True)
    totals = {"read": 0, "kept": 0}

    def on_unit(summary: dict[str, Any], done: int, total: int) -> None:
        totals["read"] += summary["read"]
        totals["kept"] += summary["kept"]
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.set_postfix(docs=totals["read"], kept=totals["kept"], refresh=False)
            bar.refresh()

    steps: dict[str, Any] = {}

    def on_step(step: str, done: int, total: int) -> None:
        if args.quiet:
            return
        if step not in steps:
            if bar is not None:
                bar.close()  # the units are done
            for other in steps.values():
                other.close()
            steps[step] = tqdm(total=total, unit="task", desc=step, dynamic_ncols=True)
        steps[step].n = done
        steps[step].refresh()

    result = run(config, args.input, args.output, workers=args.workers, address=args.address,
                 resume=args.resume, overwrite=args.overwrite, on_unit=on_unit, on_step=on_step,
                 connect_timeout_s=args.connect_timeout)
    for step_bar in steps.values():
        step_bar.close()
    if bar is not None:
        bar.close()
    if result.units_skipped:
        print(f"resumed: {result.units_skipped} of {result.units_total} units were already done")
    print(format_summary(result.stats))
    if result.warnings:
        print(f"\nwarning: {len(result.warnings)} record problem(s), all in rejected/:",
              file=sys.stderr)
        for line in result.warnings[:20]:
            print(f"  {line}", file=sys.stderr)
        if args.strict:
            return EXIT_STRICT
    return EXIT_OK


def format_summary(stats: dict[str, Any]) -> str:
    docs = stats["documents"]
    lines = [f"{'stage':<11}{'in':>9}{'out':>9}{'dropped':>9}{'cpu s':>9}  top reasons"]
    for name, stage in stats["stages"].items():
        dropped = sum(stage["rejected"].values())
        top = sorted(stage["rejected"].items(), key=lambda kv: -kv[1])[:3]
        reasons = ", ".join(f"{r} {n}" for r, n in top)
        lines.append(f"{name:<11}{stage['in']:>9}{stage['out']:>9}{dropped:>9}"
                     f"{stage['cpu_s']:>9.1f}  {reasons}")
    share = docs["kept"] / docs["read"] if docs["read"] else 0.0
    lines.append(f"\nread {docs['read']} documents: kept {docs['kept']} ({share:.1%}), "
                 f"rejected {docs['rejected']}; accounting "
                 f"{'OK' if stats['accounting_ok'] else 'FAILED'}")
    lines.extend(f"  accounting: {problem}" for problem in stats.get("accounting_problems", []))
    if "last_launch" in stats:
        launch = stats["last_launch"]
        lines.append(f"this launch: {launch['units']} units in {launch['wall_s']:.1f} s "
                     f"({launch['docs_per_s']} docs/s, {launch['workers']} workers)")
    return "\n".join(lines)


def _command_stats(args: argparse.Namespace) -> int:
    from refine.accounting import check_run
    from refine.report.collect import ReportError, load_stats
    from refine.rundir import MANIFEST, STATS, RunDir

    run_dir = RunDir(args.run_dir)
    notes: list[str] = []
    try:
        if run_dir.exists(MANIFEST):  # checked against the per-unit files; stages in run order
            stats, notes = load_stats(run_dir, run_dir.read_json(MANIFEST))
            check_run(run_dir, stats)  # the same verdict as the run's and the report's
        elif run_dir.exists(STATS):
            stats = run_dir.read_json(STATS)
        else:
            raise ReportError(f"{run_dir.url(STATS)} does not exist (is {args.run_dir} a run?)")
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(stats, indent=1))
        return EXIT_OK
    print(format_summary(stats))
    print()
    print(format_funnel(stats))
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    return EXIT_OK


def format_funnel(stats: dict[str, Any]) -> str:
    """Documents remaining after each stage, as on the report's funnel."""
    read = stats["documents"]["read"]
    lines = [f"{'after':<11}{'documents':>11}{'% of read':>11}"]
    remaining = read
    for name, stage in stats["stages"].items():
        remaining -= sum(stage["rejected"].values())
        share = remaining / read if read else 0.0
        lines.append(f"{name:<11}{remaining:>11}{share:>11.1%}")
    return "\n".join(lines)


def _command_report(args: argparse.Namespace) -> int:
    from refine.report import ReportError, build_report

    if args.samples < 0:
        print("error: --samples must be >= 0", file=sys.stderr)
        return EXIT_ERROR
    try:
        path = build_report(args.run_dir, args.output, samples=args.samples, seed=args.seed,
                            ablation=args.ablation)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {path}")
    return EXIT_OK


def _command_blocklist(args: argparse.Namespace) -> int:
    if args.blocklist_command == "build-cache":
        import time

        from refine.blocklist import DomainBlocklist

        start = time.perf_counter()
        domains = DomainBlocklist.load(args.path)
        cache = domains.cache_files[0] if domains.cache_files else "none (cache dir not writable)"
        print(f"{len(domains)} domains, cache {cache}, {'built' if domains.built else 'reused'} "
              f"in {time.perf_counter() - start:.2f}s")
        return EXIT_OK

    from refine.blocklist_update import (
        FINEWEB_UT1_CATEGORIES,
        UT1_DOWNLOAD_URL,
        BlocklistUpdateError,
        update_blocklist,
    )

    try:
        dest = update_blocklist(Path(args.dest), args.categories or FINEWEB_UT1_CATEGORIES,
                                base_url=args.base_url or UT1_DOWNLOAD_URL)
    except BlocklistUpdateError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {dest}")
    return EXIT_OK


def _command_classifier(args: argparse.Namespace) -> int:
    from refine.quality_classifier import TrainConfig, eval_path, train_files

    config = TrainConfig(dim=args.dim, buckets=args.buckets, epochs=args.epochs, lr=args.lr,
                         seed=args.seed, holdout=args.holdout)
    path, ev = train_files(args.positive, args.negative, args.out, config, args.max_docs)
    print(f"held-out: {ev['documents']} documents ({ev['positives']} positive, "
          f"{ev['negatives']} negative) at score >= {ev['threshold']}: precision "
          f"{ev['precision']:.3f}, recall {ev['recall']:.3f}, F1 {ev['f1']:.3f}")
    print(f"wrote {path} and {eval_path(path)}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    from refine.configfile import ConfigError
    from refine.run import RunError

    handlers = {"run": _command_run, "stats": _command_stats, "report": _command_report,
                "blocklist": _command_blocklist,
                "classifier": _command_classifier}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print(f"\ninterrupted. {_resume_hint(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, RunError, OSError, ValueError) as error:
        if args.debug:
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR


def _resume_hint(args: argparse.Namespace) -> str:
    if args.command != "run":
        return "Nothing was changed that a rerun does not redo."
    command = ["refine", "run", args.config, "--input", *args.input, "--output", args.output,
               "--resume"]
    return ("Finished units are kept; continue with:\n  "
            + " ".join(shlex.quote(part) for part in command))


def _one_line(error: BaseException) -> str:
    """The message of a user-facing error; OSErrors name the file and the problem."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
