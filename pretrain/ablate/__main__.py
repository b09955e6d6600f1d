"""`python -m pretrain.ablate`: the data-quality ablation's command line.

Its own entry point, not a `refine` subcommand: it imports both refine (the runs) and pretrain
(tokenizer, training, scoring), and refine never imports pretrain.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pretrain.ablate import AblationError, ablate
from refine import LOG_FORMAT

EPILOG = """\
examples:
  python -m pretrain.ablate configs/demo.yaml --input 'tests/data/warc/*.gz' \\
      --output runs/ablate-quick --quick
  python -m pretrain.ablate configs/refinedweb.yaml \\
      --input '../shared/data/warc/real-html/*.warc.gz' --output runs/ablate-real-html
"""
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.ablate",
        description="Data-quality ablation (RefinedWeb's claim, on your crawl and thresholds): "
        "refine the input into its raw (stages 1-4), filtered (1-7) and refined (1-10) "
        "variants, train identical small models on each (one tokenizer, the same number of "
        "training tokens, the same seeds) and evaluate them in bits per byte on a curated set "
        "and on a held-out slice of the refined data. Writes DIR/ablation.json, ablation.md, "
        "ablation.svg and DIR/run/report.html with an ablation section.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config of the refine run (the filtered and refined "
                        "variants use it as it is)")
    parser.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH_OR_GLOB",
                        help="input files or globs, as for `refine run`")
    parser.add_argument("--output", "-o", required=True, metavar="DIR",
                        help="ablation directory: a path, or a URL (s3://, gs://) that gets the "
                             "two refine runs and the results")
    parser.add_argument("--work", metavar="LOCAL_DIR", default=None,
                        help="with a URL --output: where the variants, tokenizer, token shards "
                             "and models go (training reads local files; default: a temporary "
                             "directory, removed at the end)")
    parser.add_argument("--quick", action="store_true",
                        help="a minutes-long smoke run: tiny model, at most 60 steps, 24 KB of "
                             "each curated source")
    parser.add_argument("--seeds", type=int, default=2,
                        help="models per variant, seeds 0..N-1 (default: 2)")
    parser.add_argument("--workers", type=int, default=2,
                        help="refine and tokenize workers (default: 2)")
    parser.add_argument("--tokens", type=int, default=None,
                        help="training tokens per model (default: one epoch of the smallest "
                             "variant, capped by the mode)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address for the refine passes (default: local Ray)")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR")

    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    from refine.config import load_config
    from refine.configfile import ConfigError
    from refine.report.ablation import markdown_table
    from refine.run import RunError
    from refine.rundir import RunDir

    try:
        config = load_config(args.config)  # fails before any work starts
        result = ablate(config, args.input, args.output, quick=args.quick, seeds=args.seeds,
                        workers=args.workers, address=args.address, tokens=args.tokens,
                        overwrite=args.overwrite, work=args.work)
    except KeyboardInterrupt:
        print("\ninterrupted. Nothing was changed that a rerun does not redo.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (AblationError, ConfigError, RunError, OSError, ValueError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(markdown_table(result))
    for problem in result["problems"]:
        print(f"warning: {problem}", file=sys.stderr)
    out = RunDir(args.output)
    print(f"wrote {out.url('ablation.json')}, ablation.md, ablation.svg and "
          f"{out.url('run', 'report.html')}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
