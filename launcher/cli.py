"""`minitron`: the command line. Thin: parse arguments, call one module, print for people or --json.

Imports are deferred into each command so `minitron --help` loads nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from .errors import EXIT_USAGE, RunBusy, SlurmError, UserError

EXIT_FAILED = 4         # status: a stage failed or was cancelled
EXIT_RUNNING = 3        # status: stages still pending or running
EXIT_SLURM_DOWN = 5     # Slurm could not be reached
EXIT_BUSY = 6           # another minitron process holds the run


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", "-p", metavar="FILE|NAME",
                        help="cluster profile (default: $MINITRON_PROFILE or h100-1x8)")
    parser.add_argument("--recipe", "-r", metavar="FILE|NAME", help="pipeline recipe (default: minitron-8b-wikitext)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. stages.distill.steps=300 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minitron", description="Plan, submit and watch the Minitron prune+distill pipeline on Slurm.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plan", help="plan every stage: nodes, parallelism, batches, memory, time")
    _add_inputs(p)
    p.add_argument("--json", action="store_true", help="machine-readable plan")

    p = sub.add_parser("submit", help="render the run and submit the stage graph")
    _add_inputs(p)
    p.add_argument("--dry-run", action="store_true", help="write the run directory and scripts, submit nothing")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("status", help="where is my run? one row per stage")
    p.add_argument("run", nargs="?", help="run id or directory (default: the newest)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", nargs="?", const=10.0, type=float, metavar="SECONDS",
                   help="refresh until the run ends (default every 10 s)")

    p = sub.add_parser("runs", help="list runs, newest first")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("logs", help="print or follow a stage's log")
    p.add_argument("run")
    p.add_argument("stage", nargs="?", help="default: the last stage that started")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--lines", type=int, default=50)

    p = sub.add_parser("cancel", help="cancel a run, or one stage and everything downstream")
    p.add_argument("run")
    p.add_argument("stage", nargs="?")

    p = sub.add_parser("resume", help="resubmit failed/cancelled stages and their dependents")
    p.add_argument("run")

    p = sub.add_parser("check", help="check a profile against the cluster")
    p.add_argument("--profile", "-p", metavar="FILE|NAME")

    p = sub.add_parser("report", help="show a run's validation-loss report")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__
        print(f"minitron-launcher {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = getattr(__import__("launcher.commands", fromlist=["x"]),
                                                           f"cmd_{args.command}")
    try:
        return handler(args)
    except UserError as exc:
        _error(str(exc))
        return exc.exit_code
    except RunBusy as exc:
        _error(str(exc))
        return EXIT_BUSY
    except SlurmError as exc:
        _error(f"Slurm is not answering: {exc}")
        return EXIT_SLURM_DOWN
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `minitron plan --json | head`
        sys.stderr.close()
        return 0


def _error(message: str) -> None:
    print(f"minitron: error: {message}", file=sys.stderr)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    sys.exit(main())
