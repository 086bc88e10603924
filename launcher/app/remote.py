"""`--remote`: submit, status, logs, cancel, resume and runs on a login node, from a laptop, over SSH.

NeMo-Run does the transport: its SSHTunnel (fabric/paramiko: ~/.ssh/config, ssh-agent, a key file) runs every
remote command and copies every file, and its PatternPackager makes the tarball of the launcher's code. It is
imported only here and only once a command goes remote (it pulls torch: ~7 s), so the local CLI stays fast.

The login node gets, once per version, the installed `launcher` and `jobs` packages (a wheel's or a
checkout's, with the bundled profiles) under WORKDIR/code/<content hash>/, and, once per content, the profile
and recipe files named on the command line under WORKDIR/inputs/<content hash>/. The command then runs there as
`PYTHONPATH=… PYTHON -m launcher.app.remote_end run COMMAND ARGS`, every word shell-quoted, its output streamed
here and its exit code ours. The environment the command needs from this shell (the profile's env_vars given
by name, e.g. HF_TOKEN) goes on the command's stdin, never on a command line (`ps`) or in a file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shlex
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

from ..config.profile import resolve_profile_path
from ..config.recipe import resolve_recipe_path
from ..config.remote import RemoteSettings, RemoteTarget, resolve_target
from ..config.schema import build
from ..config.yamlfile import load_yaml_file
from ..core.bundled import jobs_dir, profile_dir
from ..core.errors import RemoteFailed, UserError, one_line

REMOTE_OPTIONS = ("remote", "identity", "remote_python")          # ours: never forwarded
SHIPPED_INPUTS = ("profile", "recipe")                             # files named here, shipped there
REQUIRED_MODULES = {"yaml": "PyYAML", "jinja2": "Jinja2", "rich": "rich"}
LAUNCHER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_PROFILES = os.path.join("launcher", "_bundled", "cluster_profiles")
HASH_CHARS = 20
# Run by the login node's python before anything else: which of the launcher's packages it lacks.
PROBE = ("import importlib.util, sys; missing = [m for m in %r if importlib.util.find_spec(m) is None]; "
         "print('minitron-probe', '%%d.%%d' %% sys.version_info[:2], ','.join(missing) or '-')"
         % (tuple(REQUIRED_MODULES),))


def target_for(args: argparse.Namespace) -> Optional[RemoteTarget]:
    """Where `args` runs: None for here. Only `submit` reads a profile's `remote:` block (the other
    commands name a run, not a profile); a profile that is not a file here has none."""
    settings = src = None
    if args.command == "submit" and not args.remote and not os.environ.get("MINITRON_REMOTE"):
        path = resolve_profile_path(args.profile)
        if os.path.isfile(path):
            src = load_yaml_file(path)
            block = src.data.get("remote") if isinstance(src.data, dict) else None
            settings = build(RemoteSettings, block, src, "remote") if block is not None else None
    return resolve_target(args.remote, args.identity, args.remote_python, settings, src)


def forwarded_argv(command_parser: argparse.ArgumentParser, args: argparse.Namespace,
                   replace: dict[str, str]) -> list[str]:
    """The command line that parses, there, into `args` (with `replace`'s values), built from the parser's
    own actions: `--option=VALUE` (a value starting with '-' stays a value), positionals after `--`."""
    options: list[str] = []
    positionals: list[str] = []
    for action in command_parser._actions:
        name = action.dest
        if name in ("help", *REMOTE_OPTIONS) or not hasattr(args, name):
            continue
        value = replace.get(name, getattr(args, name))
        if not action.option_strings:
            positionals += [] if value is None else [str(v) for v in (value if isinstance(value, list) else [value])]
            continue
        if value == action.default and name not in replace:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            options.append(flag)
        elif isinstance(action, argparse._AppendAction):
            options += [f"{flag}={item}" for item in value]
        else:
            options.append(f"{flag}={value}")
    return [args.command, *options, *(["--", *positionals] if positionals else [])]


def remote_command(target: RemoteTarget, code_dir: str, mode: str, argv: list[str]) -> str:
    """The one line the login node's shell runs: every word quoted, nothing in it expanded but $PYTHONPATH."""
    words = " ".join(shlex.quote(word) for word in [mode, *argv])
    return (f"PYTHONPATH={shlex.quote(code_dir)}${{PYTHONPATH:+:$PYTHONPATH}} exec {shlex.quote(target.python)} "
            f"-m launcher.app.remote_end {words}")


def run_remote(target: RemoteTarget, command_parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Ship what the command needs (once), run it there with this terminal's output, return its exit code."""
    with tempfile.TemporaryDirectory(prefix="minitron-ship-") as scratch:
        code_hash = stage_code(os.path.join(scratch, "code"))
        inputs = _local_inputs(args)
        session = Session(target)
        try:
            home, code_present, present = session.probe(code_hash, {h: name for h, (name, _) in inputs.items()})
            code_dir = f"{home}/{target.relative_workdir}/code/{code_hash}"
            if not code_present:
                session.ship_code(os.path.join(scratch, "code"), scratch, code_hash, code_dir)
            replace, names = {}, {}
            for content_hash, (remote_name, (option, local_path)) in inputs.items():
                remote_path = f"{home}/{target.relative_workdir}/inputs/{content_hash}/{remote_name}"
                if content_hash not in present:
                    session.ship_file(local_path, remote_path)
                replace[option], names[remote_path] = remote_path, local_path
            argv = forwarded_argv(command_parser, args, replace)
            env_names = session.env_names(code_dir, args, replace) if args.command in ("submit", "resume") else []
            payload = {"env": {n: os.environ[n] for n in env_names if n in os.environ}, "names": names,
                       "columns": shutil.get_terminal_size((0, 0)).columns or None}
            return session.run(remote_command(target, code_dir, "run", argv), payload)
        finally:
            session.close()


def stage_code(directory: str) -> str:
    """Copy the installed `launcher` and `jobs` packages (no bytecode) and the bundled profiles into
    `directory`, laid out as a wheel installs them; their content hash names the shipped copy."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    shutil.copytree(LAUNCHER_DIR, os.path.join(directory, "launcher"), ignore=ignore)
    shutil.copytree(jobs_dir(), os.path.join(directory, "jobs"), ignore=ignore)
    if not os.path.isdir(os.path.join(directory, BUNDLED_PROFILES)):   # a checkout keeps them beside the package
        shutil.copytree(profile_dir(), os.path.join(directory, BUNDLED_PROFILES), ignore=ignore)
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(directory).as_posix()}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()[:HASH_CHARS]


def _local_inputs(args: argparse.Namespace) -> dict[str, tuple[str, tuple[str, str]]]:
    """content hash -> (its name there, (option, path here)) for each profile or recipe given that is a file
    here; a name that is not (a bundled one, or a path on the login node) is resolved there."""
    found: dict[str, tuple[str, tuple[str, str]]] = {}
    for option in SHIPPED_INPUTS:
        if not hasattr(args, option) or (option == "recipe" and not args.recipe):
            continue
        value = getattr(args, option)
        path = (resolve_profile_path if option == "profile" else resolve_recipe_path)(value)
        if not os.path.isfile(path):
            continue
        data = Path(path).read_bytes()
        name = os.path.basename(path)
        safe = name if name.replace("-", "").replace("_", "").replace(".", "").isalnum() else f"{option}.yaml"
        found[hashlib.sha256(data).hexdigest()[:HASH_CHARS]] = (safe, (option, path))
    return found


class Session:
    """One SSH connection to the login node (NeMo-Run's SSHTunnel) and the few things done over it."""

    def __init__(self, target: RemoteTarget):
        from rich.console import Console
        with warnings.catch_warnings():  # torch, which NeMo-Run imports, warns about its own dependencies
            warnings.simplefilter("ignore")
            try:
                from nemo_run.core.tunnel.client import SSHTunnel  # heavy: only once a command goes remote
            except ImportError as exc:
                raise RemoteFailed(f"--remote needs NeMo-Run on this machine ({exc}): "
                                   f"pip install 'minitron-launcher[remote]'") from None

        self.target = target
        self.tunnel = SSHTunnel(host=target.host, user=target.user, port=target.port,  # type: ignore[arg-type]
                                identity=target.identity, job_dir=target.relative_workdir)
        self.tunnel.console = Console(stderr=True, quiet=True)  # its "Connecting to …" would land in --json output
        if not sys.stdin.isatty():  # no one to type a password: refuse instead of prompting
            self.tunnel.auth_handler = self.tunnel.fallback_auth_handler = _no_prompt
        self._connect()

    def _connect(self) -> None:
        import paramiko

        port = f"-p {self.target.port} " if self.target.port else ""
        login = f"{self.target.user + '@' if self.target.user else ''}{self.target.host}"
        fix = (f"check that `ssh {port}{login} true` works from this shell without a password prompt "
               f"(--identity, ssh-agent or ~/.ssh/config)")
        try:
            self.tunnel.connect()
        except SystemExit:  # SSHTunnel exits when every way of logging in failed
            raise RemoteFailed(f"{self.target.where} refused the login; {fix}") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            reason = str(exc).replace("[Errno None] ", "") or type(exc).__name__
            raise RemoteFailed(f"cannot reach {self.target.where}: {reason}; {fix}") from None

    def _run(self, command: str, **kwargs: Any) -> Any:
        import paramiko

        try:
            return self.tunnel.run(command, warn=True, **kwargs)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise RemoteFailed(f"the connection to {self.target.where} failed: {exc or type(exc).__name__}") from None

    def probe(self, code_hash: str, inputs: dict[str, str]) -> tuple[str, bool, set[str]]:
        """(the remote home, whether this code is there, which inputs are), after checking its python."""
        workdir = shlex.quote(self.target.relative_workdir)
        tests = [f"test -f {workdir}/code/{code_hash}/.complete && echo code"]
        tests += [f"test -f {workdir}/inputs/{h}/{shlex.quote(name)} && echo input {h}" for h, name in inputs.items()]
        python = shlex.quote(self.target.python)
        result = self._run(f"cd && pwd && {{ {'; '.join(tests)}; }}; {python} -c {shlex.quote(PROBE)}", hide=True)
        lines = result.stdout.splitlines()
        last = lines[-1].split() if lines else []
        fix = (f"give --remote-python (or the profile's remote.python) a Python 3.10+ there that has PyYAML, "
               f"Jinja2 and rich: `{self.target.python} -m pip install --user PyYAML Jinja2 rich`")
        if result.exited != 0 or len(last) != 3 or last[0] != "minitron-probe":
            error = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise RemoteFailed(f"the python {self.target.python!r} on {self.target.where} does not run "
                               f"({error}); {fix}")
        if tuple(map(int, last[1].split("."))) < (3, 10) or last[2] != "-":
            lacks = ", ".join(REQUIRED_MODULES[m] for m in last[2].split(",") if m in REQUIRED_MODULES)
            raise RemoteFailed(f"the python {self.target.python!r} on {self.target.where} is {last[1]}"
                               + (f" and lacks {lacks}" if lacks else " (3.10+ needed)") + f"; {fix}")
        return lines[0], "code" in lines[1:-1], {line.split()[1] for line in lines[1:-1] if line.startswith("input ")}

    def ship_code(self, directory: str, scratch: str, code_hash: str, code_dir: str) -> None:
        """Tar `directory` with NeMo-Run's packager, copy it over and unpack it into `code_dir` atomically
        (a copy that another submission finished first is kept, ours dropped)."""
        from nemo_run.core.packaging.pattern import PatternPackager

        packager = PatternPackager(include_pattern=[os.path.join(directory, "launcher"), os.path.join(directory, "jobs")],
                                   relative_path=[directory, directory])
        tarball = packager.package(Path(directory), scratch, code_hash)
        incoming = f"{os.path.dirname(code_dir)}/.incoming-{code_hash}-{os.getpid()}"
        self._checked(f"mkdir -p {shlex.quote(os.path.dirname(code_dir))}")
        self.tunnel.put(tarball, f"{incoming}.tar.gz")
        q_in, q_dir = shlex.quote(incoming), shlex.quote(code_dir)
        self._checked(f"mkdir -p {q_in} && tar -xzf {q_in}.tar.gz -C {q_in} && rm -f {q_in}.tar.gz && "
                      f"touch {q_in}/.complete && {{ mv -T {q_in} {q_dir} 2>/dev/null || rm -rf {q_in}; }}")
        size = os.path.getsize(tarball) // 1024
        print(f"minitron: shipped the launcher's code ({size} KiB) to {self.target.where}:{code_dir}", file=sys.stderr)

    def ship_file(self, local_path: str, remote_path: str) -> None:
        incoming = f"{remote_path}.incoming-{os.getpid()}"
        self._checked(f"mkdir -p {shlex.quote(os.path.dirname(remote_path))}")
        self.tunnel.put(local_path, incoming)
        self._checked(f"mv -f {shlex.quote(incoming)} {shlex.quote(remote_path)}")

    def env_names(self, code_dir: str, args: argparse.Namespace, replace: dict[str, str]) -> list[str]:
        """The variables the command takes from the submitting shell (the profile's env_vars by name and
        required_env_vars), as the login node reads the profile (or the run's copy, for resume)."""
        what = ["run", args.run] if args.command == "resume" else ["profile", replace.get("profile", args.profile or "")]
        result = self._run(remote_command(self.target, code_dir, "env-names", what), hide=True,
                           in_stream=io.StringIO("{}\n"))
        try:
            names = json.loads(result.stdout) if result.exited == 0 else []
        except ValueError:
            names = []
        return [n for n in names if isinstance(n, str)]

    def run(self, command: str, payload: dict[str, Any]) -> int:
        """Run `command` with `payload` as its first stdin line; its output streams to this terminal."""
        result = self._run(command, hide=False, in_stream=io.StringIO(json.dumps(payload) + "\n"),
                           out_stream=sys.stdout, err_stream=sys.stderr)
        return int(result.exited)

    def _checked(self, command: str) -> None:
        result = self._run(command, hide=True)
        if result.exited != 0:
            raise RemoteFailed(f"on {self.target.where}: {command.split()[0]} failed (exit {result.exited}): "
                               f"{one_line(result.stderr.strip())}")

    def close(self) -> None:
        self.tunnel.cleanup()


def _no_prompt(*_: Any) -> Any:
    raise UserError("no terminal to ask for a password")
