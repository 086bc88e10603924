"""`minitron check`: does this profile match the cluster it names? Each check reports ok, warn or FAIL."""

from __future__ import annotations

import os

from ..backends import executor_for
from ..backends.base import Check
from ..config.profile import ClusterProfile, load_profile
from ..core.errors import ExitCode, UserError
from ..runs.registry import check_job_dir
from .views import checks_table


def common_checks(profile: ClusterProfile) -> list[Check]:
    checks = []
    if profile.image:
        if profile.image.startswith("/"):
            found = os.path.exists(profile.image)
            checks.append(Check("image", "ok" if found else "FAIL", f"{profile.image} {'exists' if found else 'is missing'}"))
        else:
            checks.append(Check("image", "ok", f"well formed: {profile.image}"))
    for mount in profile.mounts:
        source = mount.split(":")[0]
        found = os.path.exists(source)
        checks.append(Check(f"mount {source}", "ok" if found else "FAIL", "exists" if found else "missing here"))
    try:
        check_job_dir(profile.job_dir, profile.source)
        checks.append(Check("job_dir", "ok", f"{profile.job_dir}: its runs/ is yours alone, or can be created"))
    except UserError as exc:
        checks.append(Check("job_dir", "FAIL", exc.message))
    for name in profile.required_env_vars:
        present = bool(os.environ.get(name))
        checks.append(Check(f"env {name}", "ok" if present else "FAIL", "set" if present else "not set in this shell"))
    return checks


def gather_checks(profile: ClusterProfile) -> list[Check]:
    """Every check of `minitron check` (the common ones, then the executor's), without printing."""
    return common_checks(profile) + executor_for(profile.executor).checks(profile)


def run_checks(profile_arg: str | None) -> int:
    profile = load_profile(profile_arg)
    checks = gather_checks(profile)
    checks_table(profile.source, checks)
    return ExitCode.CHECK_FAILED if any(c.result == "FAIL" for c in checks) else ExitCode.OK
