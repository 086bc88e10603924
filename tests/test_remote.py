"""`--remote` without a network: the `[user@]host[:port]` parser and the profile's `remote:` block (bad values
are exit 2 with file, key and line before anything connects), the command line forwarded to the login node
(parses there into the same arguments; through a real shell every word stays one literal word), the login
node's end (its stdin payload, paths renamed back), and NeMo-Run staying out of the local CLI.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from launcher.app import cli, remote_end
from launcher.app.remote import forwarded_argv, remote_command, target_for
from launcher.config.remote import RemoteTarget, parse_spec
from launcher.core.errors import ExitCode, UserError
from tests.conftest import REPO, run_cli, write_profile

HOSTILE = ["'; touch /tmp/pwned #", "$(touch /tmp/pwned)", "`id`", "-rf", "a b\tc", "x\"y", "--json", "*", "~", ""]


@pytest.mark.parametrize("spec, expected", [
    ("login.example.org", ("login.example.org", None, None)),
    ("alice@login-1:2222", ("login-1", "alice", 2222)),
    ("bob@10.0.0.7", ("10.0.0.7", "bob", None)),
    ("carol@[fe80::1]:22", ("fe80::1", "carol", 22)),
    ("cluster", ("cluster", None, None)),
])
def test_a_spec_is_user_host_port(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["-oProxyCommand=touch x", "alice@-oProxyCommand=x", "-l@host", "host:0",
                                  "host:65536", "host:22x", "a@b@c", "host name", "host;id", "", "@host",
                                  "[fe80::1", "h\nx"])
def test_a_bad_spec_is_refused_naming_the_option(spec):
    with pytest.raises(UserError) as info:
        parse_spec(spec)
    assert info.value.exit_code == ExitCode.USAGE and "--remote" in str(info.value)


def _parsed(argv):
    parser = cli.build_parser()
    return parser, parser.parse_args(argv)


@pytest.mark.parametrize("argv", [
    ["status"], ["status", "RUN", "--json", "--wide"], ["status", "--watch"], ["status", "--watch", "3", "R"],
    ["runs", "--json"], ["logs", "R", "data", "-f", "-n", "0", "--rank", "2"], ["logs", "--", "-x", "-y"],
    ["cancel", "R", "prune_depth"], ["resume", "R", "--submit"],
    ["submit", "-p", "p.yaml", "-r", "r.yaml", "--set", "a.b=1", "--set", "c=-2", "--nodes", "2", "--dry-run"],
    ["submit", "--smoke", "--json"],
    *[["status", "--", word] for word in HOSTILE], *[["submit", f"--set={word}"] for word in HOSTILE],
    *[["logs", "--", "R", word] for word in HOSTILE],
])
def test_the_forwarded_command_parses_there_into_the_same_arguments(argv):
    parser, args = _parsed([argv[0], "--remote", "h", "--identity", "k", "--remote-python", "p", *argv[1:]])
    sub = cli._subcommand(parser, args.command)
    forwarded = forwarded_argv(sub, args, {})
    assert not {"--remote", "--identity", "--remote-python"} & {w.split("=")[0] for w in forwarded}
    again = vars(parser.parse_args(forwarded))
    for key in ("remote", "identity", "remote_python"):
        vars(args).pop(key), again.pop(key)
    assert again == vars(args)


def test_the_input_files_are_replaced_by_their_shipped_copies():
    parser, args = _parsed(["submit", "-p", "mine.yaml", "-r", "r.yaml"])
    forwarded = forwarded_argv(cli._subcommand(parser, "submit"), args, {"profile": "/h/w/inputs/ab/mine.yaml"})
    assert parser.parse_args(forwarded).profile == "/h/w/inputs/ab/mine.yaml"


def test_every_word_reaches_the_remote_program_literally(tmp_path):
    """Through a real shell: the line remote_command builds runs the python it names with exactly our words."""
    fake = tmp_path / "fakepython"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"\n")
    fake.chmod(0o755)
    argv = ["status", "--json", "--", *HOSTILE]
    line = remote_command(RemoteTarget(host="h", python=str(fake)), str(tmp_path / "code dir"), "run", argv)
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["-m", "launcher.app.remote_end", "run", *argv]
    assert not (tmp_path / "pwned").exists() and not os.path.exists("/tmp/pwned")


@pytest.mark.parametrize("block, key", [
    ({"host": "-oProxyCommand=touch x"}, "remote.host"), ({"host": "h", "user": "a;b"}, "remote.user"),
    ({"host": "h", "port": 0}, "remote.port"), ({"host": "h", "python": "python3; id"}, "remote.python"),
    ({"host": "h", "workdir": "../x"}, "remote.workdir"), ({"host": "h", "hots": 1}, "remote.hots"),
    ({"host": "h", "identity": "/no/such/key"}, "remote.identity"), ({"user": "a"}, "remote.host"),
])
def test_a_bad_remote_block_names_file_key_and_line(tmp_path, minitron_home, block, key, monkeypatch):
    monkeypatch.delenv("MINITRON_REMOTE", raising=False)
    profile = write_profile(tmp_path / "p.yaml", remote=block)
    proc = run_cli("submit", "--profile", profile, "--recipe", "tiny")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "p.yaml:" in lines[0] and key in lines[0], lines[0]
    assert not os.path.exists(tmp_path / "jobdir") and not minitron_home.exists()


def test_the_block_is_used_by_submit_unless_told_local(tmp_path, monkeypatch):
    key = tmp_path / "key"
    key.write_text("not really a key")
    profile = write_profile(tmp_path / "p.yaml", remote={"host": "login", "user": "me", "port": 2200,
                                                         "identity": str(key), "python": "/opt/py/bin/python3"})
    monkeypatch.delenv("MINITRON_REMOTE", raising=False)
    target = target_for(_parsed(["submit", "-p", profile])[1])
    assert target == RemoteTarget(host="login", user="me", port=2200, identity=str(key), python="/opt/py/bin/python3")
    assert target_for(_parsed(["submit", "-p", profile, "--remote", "local"])[1]) is None
    assert target_for(_parsed(["submit", "-p", profile, "--remote", "x@other"])[1]).host == "other"
    monkeypatch.setenv("MINITRON_REMOTE", "local")
    assert target_for(_parsed(["submit", "-p", profile])[1]) is None
    assert target_for(_parsed(["status", "R"])[1]) is None


def test_bad_remote_options_are_exit_2_before_any_connection(tmp_path, minitron_home):
    for args in (["--remote", "-oProxyCommand=touch x"], ["--remote", "h", "--identity", str(tmp_path / "none")],
                 ["--remote", "h", "--remote-python", "python3 -c 'import os'"]):
        proc = run_cli("status", "R", *args, env={"MINITRON_REMOTE": ""})
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_the_login_node_takes_only_names_and_text_from_stdin():
    line = json.dumps({"env": {"HF_TOKEN": "v", "BAD NAME": "x", "N": 3, "LD_PRELOAD=": "x"},
                       "names": {"/h/w/inputs/ab/p.yaml": "mine.yaml", "": "x"}, "columns": 5})
    payload = remote_end.read_payload(io.StringIO(line + "\n"))
    assert payload == {"env": {"HF_TOKEN": "v"}, "names": {"/h/w/inputs/ab/p.yaml": "mine.yaml"}, "columns": None}
    assert remote_end.read_payload(io.StringIO("not json\n")) == {"env": {}, "names": {}, "columns": None}
    out = io.StringIO()
    remote_end._Renamed(out, payload["names"]).write("error: /h/w/inputs/ab/p.yaml:3: remote.host: bad\n")
    assert out.getvalue() == "error: mine.yaml:3: remote.host: bad\n"


def test_the_local_cli_never_imports_nemo_run(minitron_home):
    """NeMo-Run (and torch behind it) only once a command goes remote: `runs` and `status` here stay light."""
    code = ("import sys; from launcher.app import cli; cli.main(['runs', '--json']); cli.main(['status'])\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('nemo_run', 'torch', 'fabric', 'paramiko'))\n"
            "print(json.dumps(heavy))")
    proc = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "MINITRON_HOME": str(minitron_home), "MINITRON_REMOTE": "",
                               "PYTHONPATH": REPO}, timeout=60)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [], proc.stderr
