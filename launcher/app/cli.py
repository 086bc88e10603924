"""`minitron`: the command line. Thin: parse arguments, call one command, print for people or --json.

The commands module is imported only once a command runs, so `minitron --help` loads nothing heavy.
Every error leaves as one line and an ExitCode (launcher/core/errors.py); an unexpected exception too
(its traceback only with MINITRON_DEBUG=1).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .. import __version__
from ..core.errors import ExitCode, LauncherError, one_line


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", "-p", metavar="FILE|NAME",
                        help="cluster profile (default: $MINITRON_PROFILE or h100-1x8)")
    parser.add_argument("--recipe", "-r", metavar="FILE|NAME", help="pipeline recipe (default: minitron-8b-wikitext)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. stages.distill.steps=300 (repeatable)")
    parser.add_argument("--nodes", type=_count, metavar="N",
                        help="each stage takes at most N of the profile's nodes (default: the profile's max_nodes)")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


REMOTE_COMMANDS = ("submit", "status", "runs", "logs", "cancel", "resume")


def _add_remote(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("from another machine (docs/remote.md)")
    group.add_argument("--remote", metavar="[USER@]HOST[:PORT]",
                       help="run this command on that login node over SSH (default: $MINITRON_REMOTE, or for "
                            "submit the profile's remote: block; 'local': here)")
    group.add_argument("--identity", metavar="FILE",
                       help="the SSH private key (default: $MINITRON_REMOTE_IDENTITY, ssh-agent, ~/.ssh/config)")
    group.add_argument("--remote-python", metavar="PATH",
                       help="the login node's python (default: $MINITRON_REMOTE_PYTHON, the profile's, python3)")


def _add_wide(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wide", action="store_true",
                        help="every column, however wide (a narrow terminal otherwise gets the most useful ones)")


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.5 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0.5 and 3600 seconds, got {text}")
    return value


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 1 <= value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"must be between 1 and 604800 seconds, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that exits with ExitCode.USAGE and a one-line, escaped message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"minitron: error: {one_line(message)}", file=sys.stderr)
        sys.exit(ExitCode.USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minitron",
                     description="Plan, submit and watch the Minitron prune+distill pipeline on Slurm.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("plan", help="plan every stage: nodes, parallelism, batches, memory, time")
    _add_inputs(p)
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="machine-readable plan")
    shown.add_argument("--graph", nargs="?", const="-", metavar="FILE",
                       help="the stage graph: a tree here (each stage under its dependencies, nodes×GPUs, estimate), "
                            "or a picture in FILE.svg, FILE.png or FILE.dot (needs the graph extra: "
                            "pip install 'minitron-launcher[graph]')")
    _add_wide(p)

    p = sub.add_parser("submit", help="render the run and submit the stage graph")
    _add_inputs(p)
    p.add_argument("--dry-run", action="store_true", help="write the run directory and scripts, submit nothing")
    p.add_argument("--smoke", action="store_true",
                   help="the bundled tiny recipe on this profile, every stage on one node, short limits: "
                        "is the cluster ready for the real recipe?")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("status", help="where is my run? one row per stage")
    p.add_argument("run", nargs="?", help="run id or directory (default: the newest)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", nargs="?", const=10.0, type=_interval, metavar="SECONDS",
                   help="refresh until the run is no longer live (default every 10 s)")
    _add_wide(p)

    p = sub.add_parser("runs", help="every run and its live state, newest first")
    p.add_argument("--json", action="store_true")
    _add_wide(p)

    p = sub.add_parser("logs", help="print or follow a stage's log", description=(
        "Print the end of a stage's log. Each line is shown as all minitron output is: control bytes as "
        "\\xNN, bad UTF-8 as U+FFFD, secret-looking values redacted. A line over 64 KiB shows only its end, "
        "after a marker '[first N bytes of this line not shown]'. Memory stays bounded whatever the log "
        "holds; the raw log is logs/<stage>-<job id>.out (logs/<stage>.log locally) in the run directory."))
    p.add_argument("run")
    p.add_argument("stage", nargs="?", help="default: the last stage that started")
    p.add_argument("-f", "--follow", action="store_true",
                   help="then print each new line once it is complete, until the run is no longer live")
    p.add_argument("-n", "--lines", type=int, default=50, metavar="N",
                   help="the last N lines (default 50); 0 or less: the whole log")
    p.add_argument("--rank", type=int, metavar="N",
                   help="only rank N's output (its own log, logs/<stage>-<job id>.rank<N>.out; locally "
                        "logs/<stage>.rank<N>.log); without it, every rank's")

    p = sub.add_parser("cancel", help="cancel a run, or one stage and everything downstream")
    p.add_argument("run")
    p.add_argument("stage", nargs="?")

    p = sub.add_parser("resume", help="resubmit failed/cancelled stages and their dependents")
    p.add_argument("run")
    p.add_argument("--submit", action="store_true",
                   help="submit a dry run (rendered, never submitted); without it resume refuses one")

    p = sub.add_parser("check", help="check a profile against the cluster")
    p.add_argument("--profile", "-p", metavar="FILE|NAME")
    p.add_argument("--probe", action="store_true",
                   help="also run one short job per image and partition that reports what the container offers")
    p.add_argument("--timeout", type=_timeout, default=600.0, metavar="SECONDS",
                   help="how long --probe waits for its jobs (default 600)")
    p.add_argument("--json", action="store_true", help="the checks and the probe's whole report as JSON")

    p = sub.add_parser("calibrate", help="record finished runs' measured stage times for the planner's estimates")
    p.add_argument("runs", nargs="*", metavar="RUN", help="default: every DONE run not recorded yet")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help="show a run's validation-loss report")
    p.add_argument("run", nargs="?", help="default: the newest run")
    p.add_argument("--json", action="store_true")

    for name, what in (("profiles", "cluster profiles"), ("recipes", "recipes")):
        p = sub.add_parser(name, help=f"list the bundled {what}, or show one")
        p.add_argument("--json", action="store_true")
        actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
        show = actions.add_parser("show", help=f"print one of the {what} as written")
        show.add_argument("name", metavar="NAME")
        show.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                          help="its text and its data as JSON")

    p = sub.add_parser("init", help="write a commented cluster profile from what Slurm says about this cluster")
    p.add_argument("--output", "-o", metavar="FILE", help="where to write it (default: profile.yaml)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--from-file", metavar="DIR",
                   help="read saved output of sinfo, scontrol and sacctmgr from DIR instead of asking Slurm")
    p.add_argument("--partition", metavar="NAME", help="the GPU partition (default: the default or only one with GPUs)")
    p.add_argument("--cpu-partition", metavar="NAME", help="for data prep and the report (default: one without GPUs)")
    p.add_argument("--gpu-model", metavar="MODEL", help="e.g. H100-80GB, where GRES names no type init knows")
    p.add_argument("--gpus-per-node", type=int, metavar="N",
                   help="GPUs per node where GRES is wrong; 0: nodes without GPUs (every stage on the CPUs)")
    p.add_argument("--container", metavar="IMAGE", help="the NeMo image the stages run in, or none")
    p.add_argument("--python", metavar="PATH",
                   help="with --container none: the Python on the nodes that has the jobs' stack (NeMo 2.7)")
    p.add_argument("--job-dir", metavar="DIR", help="where runs go, on the shared file system ($VARS allowed)")
    p.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes one stage may use (default 1)")
    p.add_argument("--json", action="store_true", help="what was read and written, as JSON")
    for name in REMOTE_COMMANDS:
        _add_remote(_subcommand(parser, name))
    return parser


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices[name]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(f"minitron-launcher {__version__}")
        return ExitCode.OK
    if not args.command:
        parser.print_help()
        return ExitCode.USAGE
    try:
        if args.command in REMOTE_COMMANDS:
            from . import remote  # deferred as the commands are; it imports NeMo-Run only once a command goes remote
            target = remote.target_for(args)
            if target is not None:
                return remote.run_remote(target, _subcommand(parser, args.command), args)
        from . import commands  # deferred: `minitron --help` loads argparse and the errors module only
        handler: Callable[[argparse.Namespace], int] = getattr(commands, f"cmd_{args.command}")
        return int(handler(args))
    except LauncherError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `minitron plan --json | head`
        sys.stderr.close()
        return ExitCode.OK
    except Exception as exc:  # noqa: BLE001 - the last-resort guard: one line, never a traceback
        if os.environ.get("MINITRON_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (rerun with MINITRON_DEBUG=1 for the traceback, "
               f"and please report it)")
        return ExitCode.INTERNAL


def _error(message: str) -> None:
    print(f"minitron: error: {one_line(message)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
