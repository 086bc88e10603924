"""The profile's `tracking` block: which experiment trackers the training stages log to besides TensorBoard.

W&B and MLflow are what teams watch; the jobs log to them through Lightning's own loggers (jobs/stages/tracking.py).
What can be known from the file is checked when the profile loads, so a run that could not log is refused before
anything is created or queued: names W&B accepts, an MLflow URI that mlflow-skinny (the jobs' package) stores to,
a `file:` store on a path the container mounts, no credentials inside the URI, and an API key for W&B online passed
by name through env_vars (its value comes from the submitting shell: launcher/runs/prepare.py checks it is set).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

from jobs.contract import MLFLOW_SCHEMES, file_uri_path

from .schema import field
from .values import lies_under
from .yamlfile import Located, shown

WANDB_KEY_VAR = "WANDB_API_KEY"
# W&B refuses / \ # ? % : in project and entity names; a conservative set keeps the names usable as path parts too
_WANDB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_wandb_name(value: str) -> str | None:
    if not _WANDB_NAME.match(value):
        return f"{shown(value)} is not a W&B name: letters, digits, '_', '.', '-', starting with a letter or digit"
    return None


def _check_mlflow_uri(value: str) -> str | None:
    scheme = value.partition(":")[0]
    if scheme not in MLFLOW_SCHEMES:
        return (f"{shown(value)} is not a tracking URI the jobs can store to: mlflow-skinny writes to "
                f"{', '.join(s + ':' for s in MLFLOW_SCHEMES)} (a database store needs the full mlflow package)")
    parts = urlsplit(value)
    if parts.username or parts.password:
        return ("holds credentials (user:password@); the URI is written into every training stage's config: "
                "list MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in env_vars "
                "by name instead")
    if scheme == "file":
        path = file_uri_path(value)
        if path is None or not os.path.isabs(path):
            return (f"{shown(value)} is not an absolute path on this host: write file:///ABSOLUTE/PATH (a relative "
                    f"one would land in each job's working directory)")
    elif not parts.hostname:
        return f"{shown(value)} names no server: write {scheme}://HOST[:PORT]"
    return None


@dataclass
class WandbSpec:
    project: str = field(check=_check_wandb_name, max_len=128, doc="the W&B project the training stages log to")
    entity: Optional[str] = field(None, check=_check_wandb_name, max_len=128,
                                  doc="the team or user; default: the API key's own")
    mode: Literal["online", "offline"] = field("online", doc="offline: each stage keeps its run in its log dir "
                                                             "until `wandb sync` (no network, no API key)")


@dataclass
class MlflowSpec:
    tracking_uri: str = field(check=_check_mlflow_uri, doc="file:///ABS/PATH under job_dir or a mount, or "
                                                           "http(s)://server")
    experiment: str = field("minitron", max_len=256, doc="the MLflow experiment the training stages log to")


@dataclass
class TrackingSpec:
    wandb: Optional[WandbSpec] = field(None, doc="Weights & Biases, through Lightning's WandbLogger")
    mlflow: Optional[MlflowSpec] = field(None, doc="MLflow, through Lightning's MLFlowLogger")

    def for_stages(self) -> Optional[dict[str, Any]]:
        """What a training stage's plan carries (launcher/planning/planner.py), or None when nothing is on."""
        enabled = {name: dict(vars(spec)) for name, spec in (("wandb", self.wandb), ("mlflow", self.mlflow)) if spec}
        return enabled or None


def check_tracking(tracking: TrackingSpec, passed_env: list[str], mounted: Optional[list[str]], src: Located) -> None:
    """Rules between `tracking` and the rest of the profile: W&B online needs its key among the variables passed
    from the shell (`passed_env`), a file store must outlive the container: lie under one of the `mounted` paths
    (job_dir and the mounts' destinations, as HF_HOME must; None: no container)."""
    wandb, mlflow = tracking.wandb, tracking.mlflow
    if wandb is not None and wandb.mode == "online" and WANDB_KEY_VAR not in passed_env:
        raise src.error("tracking.wandb.mode", f"online (the default) logs in with {WANDB_KEY_VAR}, which env_vars "
                        f"does not list: no job could log in", f"add `- {WANDB_KEY_VAR}` to env_vars, by name, and "
                        f"export it before submit; or set mode: offline and `wandb sync` the runs later")
    if mlflow is None or not mlflow.tracking_uri.startswith("file:") or mounted is None:
        return
    store = os.path.normpath(file_uri_path(mlflow.tracking_uri) or "")
    if not lies_under(store, mounted):
        raise src.error("tracking.mlflow.tracking_uri", f"{shown(store)} is under no path the container mounts "
                        f"(job_dir or a mount's destination), so the MLflow runs would vanish with each stage's "
                        f"container", f"put it under job_dir, or add a mount SHARED_DIR:{store} to mounts")
