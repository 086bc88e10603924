"""The login node's end of `--remote` (launcher/app/remote.py is the laptop's end).

`python -m launcher.app.remote_end run COMMAND ARGS…` runs the CLI as if typed on the login node;
`… env-names profile FILE` and `… env-names run RUN` print, as JSON, the variables a submission takes from
the submitting shell. Either first reads one JSON line on stdin: `env` (those variables' values from the
laptop: secrets travel only there, inside the SSH channel, never on a command line or in a file), `names`
(shipped file -> the laptop's path, so an error names the file the user edits) and `columns` (the
laptop's terminal width, for the tables).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from ..config.profile import ENV_NAME, resolve_profile_path
from ..config.remote import LOCAL, REMOTE_ENV
from ..config.yamlfile import load_yaml_file
from ..core.errors import ExitCode
from ..runs.registry import resolve_run
from . import cli

MAX_PAYLOAD_BYTES = 1024 * 1024
CODE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds launcher/, jobs/


class _Renamed:
    """stderr with each shipped file's path shown as the laptop's."""

    def __init__(self, stream: TextIO, names: dict[str, str]):
        self._stream, self._names = stream, sorted(names.items(), key=lambda kv: -len(kv[0]))

    def write(self, text: str) -> int:
        for shipped, local in self._names:
            text = text.replace(shipped, local)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def read_payload(stream: TextIO) -> dict[str, Any]:
    """The first stdin line, checked: a variable that is not NAME=text is dropped, never set."""
    try:
        data = json.loads(stream.readline(MAX_PAYLOAD_BYTES) or "{}")
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    env = data.get("env") if isinstance(data.get("env"), dict) else {}
    names = data.get("names") if isinstance(data.get("names"), dict) else {}
    columns = data.get("columns")
    return {"env": {k: v for k, v in env.items() if isinstance(v, str) and ENV_NAME.match(str(k)) and "\0" not in v},
            "names": {k: v for k, v in names.items() if isinstance(k, str) and isinstance(v, str) and k},
            "columns": columns if isinstance(columns, int) and 20 <= columns <= 1000 else None}


def env_names(kind: str, what: str) -> list[str]:
    """The profile's env_vars given by name and its required_env_vars (read as written: the submission
    itself checks them and says what is wrong)."""
    if kind == "run":
        profile = resolve_run(what).profile
        return sorted(set(profile.env_passthrough()) | set(profile.required_env_vars))
    data = load_yaml_file(resolve_profile_path(what or None)).data
    data = data if isinstance(data, dict) else {}
    items = [*(data.get("env_vars") or []), *(data.get("required_env_vars") or [])]
    return sorted({item for item in items if isinstance(item, str) and ENV_NAME.match(item)})


def main(argv: list[str]) -> int:
    payload = read_payload(sys.stdin)
    os.environ.update(payload["env"])
    os.environ[REMOTE_ENV] = LOCAL  # the profile's remote: block names this very node: never go on from here
    if payload["columns"]:
        os.environ["COLUMNS"] = str(payload["columns"])
    shipped, _, rest = os.environ.get("PYTHONPATH", "").partition(os.pathsep)
    if shipped == CODE_DIR:  # put there by remote.remote_command: sbatch passes the user's own to the jobs
        os.environ["PYTHONPATH"] = rest
    if argv[:1] == ["env-names"] and len(argv) == 3:
        try:
            print(json.dumps(env_names(argv[1], argv[2])))
        except Exception:  # noqa: BLE001 - the command itself reports what is wrong with the profile or run
            print("[]")
        return ExitCode.OK
    if argv[:1] != ["run"]:
        print("minitron: error: remote_end expects `run COMMAND ARGS` or `env-names profile|run WHAT`",
              file=sys.stderr)
        return ExitCode.USAGE
    sys.stderr = _Renamed(sys.stderr, payload["names"])  # type: ignore[assignment]
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
