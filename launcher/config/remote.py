"""Where `--remote` sends a command: `[user@]host[:port]` from the command line or $MINITRON_REMOTE, and a
profile's `remote:` block, checked before anything connects.

Every value here reaches paramiko, a remote shell or a path on the login node, so each is held to a small
character set (a host or user that starts with `-` could be read as an ssh option; a python or workdir with a
space or `;` would change the remote command). Pure and light: the CLI asks it on every submit, status, … to
decide between here and there; the connection itself is launcher/app/remote.py's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

from ..core.errors import UserError
from .schema import field
from .yamlfile import Located, shown

REMOTE_ENV = "MINITRON_REMOTE"              # [user@]host[:port], or `local`
IDENTITY_ENV = "MINITRON_REMOTE_IDENTITY"   # a private key file on this machine
PYTHON_ENV = "MINITRON_REMOTE_PYTHON"       # the login node's python
LOCAL = "local"                             # run here, whatever $MINITRON_REMOTE or the profile say
DEFAULT_PYTHON = "python3"
DEFAULT_WORKDIR = ".minitron/remote"        # under the login node's home

_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$")  # names and IPv4 addresses
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]{2,45}$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_COMMAND = re.compile(r"^[A-Za-z0-9_.~/+][A-Za-z0-9_./+-]{0,254}$")  # a program name or path, nothing a shell reads
_SPEC = re.compile(r"^(?:(?P<user>[^@]*)@)?(?:\[(?P<ipv6>[^\]]*)\]|(?P<host>[^:@]*))(?::(?P<port>[^:]*))?$")


def check_host(value: str) -> str | None:
    if _HOSTNAME.match(value) or (":" in value and _IPV6.match(value)):
        return None
    return f"{shown(value)} is not a host name or address (letters, digits, '.', '-'; not starting with '-')"


def check_user(value: str) -> str | None:
    return None if _USER.match(value) else \
        f"{shown(value)} is not a user name (letters, digits, '.', '_', '-'; not starting with '-')"


def check_python(value: str) -> str | None:
    return None if _COMMAND.match(value) and ".." not in value.split("/") else \
        f"{shown(value)} is not a program name or path (letters, digits, '_', '.', '/', '+', '-'; no spaces)"


def check_workdir(value: str) -> str | None:
    path = value[2:] if value.startswith("~/") else value
    if path and _COMMAND.match(path) and "~" not in path and ".." not in path.split("/"):
        return None
    return f"{shown(value)} is not a plain directory path (letters, digits, '_', '.', '/', '-'; no '..')"


def check_identity(value: str) -> str | None:
    return None if value.strip() and "\n" not in value else f"{shown(value)} is not a file path"


@dataclass
class RemoteSettings:
    """A profile's `remote:` block: `minitron submit` with this profile runs on that login node."""

    host: str = field(check=check_host, max_len=253, doc="the login node (a name from ~/.ssh/config works too)")
    user: Optional[str] = field(None, check=check_user, doc="default: ~/.ssh/config's, else yours")
    port: Optional[int] = field(None, min=1, max=65535, doc="default: ~/.ssh/config's, else 22")
    identity: Optional[str] = field(None, check=check_identity,
                                    doc="a private key on this machine; default: ssh-agent and ~/.ssh's keys")
    python: str = field(DEFAULT_PYTHON, check=check_python,
                        doc="the login node's Python (3.10+ with PyYAML, Jinja2 and rich)")
    workdir: str = field(DEFAULT_WORKDIR, check=check_workdir,
                         doc="where the launcher's code and your files are kept there; relative: under home")


@dataclass(frozen=True)
class RemoteTarget:
    """A login node to run one command on, every value checked."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None
    identity: Optional[str] = None
    python: str = DEFAULT_PYTHON
    workdir: str = DEFAULT_WORKDIR

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}{f':{self.port}' if self.port else ''}"

    @property
    def relative_workdir(self) -> str:
        """The workdir as the remote shell reads it from home (`~/x` and `x` alike)."""
        return self.workdir[2:] if self.workdir.startswith("~/") else self.workdir


def parse_spec(text: str, key: str = "--remote") -> tuple[str, Optional[str], Optional[int]]:
    """(host, user, port) of `[user@]host[:port]` (an IPv6 address in brackets); UserError naming `key`."""
    match = _SPEC.match(text.strip())
    if not match:
        raise UserError(f"expected [USER@]HOST[:PORT], got {shown(text)}", key=key)
    user, port_text = match.group("user"), match.group("port")
    host = match.group("ipv6") if match.group("ipv6") is not None else match.group("host")
    for problem in (check_host(host or ""), check_user(user) if user is not None else None):
        if problem:
            raise UserError(problem, key=key, hint="expected [USER@]HOST[:PORT]")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise UserError(f"port {shown(port_text)} is not a number from 1 to 65535", key=key)
        port = int(port_text)
    return host, user, port


def resolve_target(spec: Optional[str], identity: Optional[str], python: Optional[str],
                   settings: Optional[RemoteSettings] = None, src: Optional[Located] = None) -> Optional[RemoteTarget]:
    """The login node a command runs on, or None for here. The host comes from `--remote`, else
    $MINITRON_REMOTE, else the profile's block (`src`: its file, for errors; `local` at any of them: here);
    --identity and --remote-python (or their variables) replace the block's keys."""
    key = "--remote"
    if spec is None and os.environ.get(REMOTE_ENV):
        spec, key = os.environ[REMOTE_ENV], f"${REMOTE_ENV}"
    if spec is not None and spec.strip() == LOCAL:
        return None
    if spec is None and settings is None:
        return None
    if spec is not None:
        host, user, port = parse_spec(spec, key)
    else:
        assert settings is not None
        host, user, port = settings.host, settings.user, settings.port
    identity_key: str | None = "--identity"
    if identity is None and os.environ.get(IDENTITY_ENV):
        identity, identity_key = os.environ[IDENTITY_ENV], f"${IDENTITY_ENV}"
    if identity is None and settings is not None and settings.identity:
        identity, identity_key = settings.identity, None
    python_key = "--remote-python"
    if python is None and os.environ.get(PYTHON_ENV):
        python, python_key = os.environ[PYTHON_ENV], f"${PYTHON_ENV}"
    if python is None:
        python = settings.python if settings is not None else DEFAULT_PYTHON
    problem = check_python(python)
    if problem:
        raise UserError(problem, key=python_key)
    return RemoteTarget(host=host, user=user, port=port, python=python,
                        identity=_identity_file(identity, identity_key, src) if identity else None,
                        workdir=settings.workdir if settings is not None else DEFAULT_WORKDIR)


def _identity_file(path: str, key: str | None, src: Optional[Located]) -> str:
    """A key file that exists and can be read here: paramiko would otherwise fall back to other keys and
    report a bare authentication failure."""
    full = os.path.abspath(os.path.expanduser(path))
    problem = check_identity(path) or (None if os.path.isfile(full) and os.access(full, os.R_OK)
                                       else f"key file {shown(path)} does not exist or is not readable here")
    hint = "give the private key of an SSH key pair the login node accepts"
    if problem and key is None and src is not None:
        raise src.error("remote.identity", problem, hint)
    if problem:
        raise UserError(problem, key=key or "remote.identity", hint=hint)
    return full
