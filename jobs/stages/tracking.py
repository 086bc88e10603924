"""W&B and MLflow for a training stage, through Lightning's own loggers, when its config has `tracking`.

NeMo's logger takes them beside its TensorBoard logger (`NeMoLogger(wandb=..., extra_loggers=[...])`);
Lightning logs the same metrics to each, from global rank 0, the only rank that builds them. Each is imported only when the profile turns it on, so a
container without wandb or mlflow runs every stage that does not use them.

One tracker run per training stage, named `<run id>/<stage>`, and the same one after a time-limit requeue:
W&B by the id the launcher derived from those names (`wandb.init(id=..., resume="allow")`, Lightning's default;
offline, one run per attempt: `wandb_attempt_id`), MLflow by looking the run up by name in its experiment and
handing its id to MLFlowLogger.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

from jobs.contract import StageConfig
from jobs.runtime.frame import is_rank_zero

log = logging.getLogger("jobs")

# How the training ended, for `close`.
DONE, CONTINUING, FAILED = "done", "continuing", "failed"
# Stage-config sections worth seeing beside the curves, as the W&B run's config.
LOGGED_SETTINGS = ("train", "batch", "parallel", "engine")


def nemo_logger_args(cfg: StageConfig) -> dict[str, Any]:
    """`wandb=` and `extra_loggers=` of NeMoLogger for the trackers the stage config turns on, on global rank 0:
    Lightning logs from there alone, and other ranks without them never open the tracker's store (N ranks creating
    an MLflow file store's first experiment at once race each other)."""
    tracking = cfg.tracking or {}
    args: dict[str, Any] = {}
    if not is_rank_zero():
        return args
    if "wandb" in tracking:
        args["wandb"] = wandb_logger(cfg)
    if "mlflow" in tracking:
        args["extra_loggers"] = [mlflow_logger(cfg)]
    return args


def wandb_logger(cfg: StageConfig):
    """Lightning's WandbLogger, writing under the stage's log dir (`wandb/`), offline when the profile says so."""
    from lightning.pytorch.loggers import WandbLogger

    spec = cfg.tracking["wandb"]
    offline = spec["mode"] == "offline" or os.environ.get("WANDB_MODE") in ("offline", "dryrun")
    return WandbLogger(name=cfg.tracking["run_name"], project=spec["project"], entity=spec.get("entity"),
                       id=wandb_attempt_id(spec["id"], cfg.outputs["log_dir"], offline), offline=offline,
                       save_dir=cfg.outputs["log_dir"], group=spec.get("group"), job_type=spec.get("job_type"),
                       config={section: getattr(cfg, section) for section in LOGGED_SETTINGS})


def wandb_attempt_id(run_id: str, log_dir: str, offline: bool) -> str:
    """Online, every attempt resumes the stage's one run. Offline, W&B cannot resume: `wandb sync` of a second
    offline run with the same id replaces the first (wandb/wandb#3841), so each later attempt gets `-a<N>`, a run
    of its own in the same group, under the same name."""
    earlier = len(list(Path(log_dir, "wandb").glob(f"offline-run-*-{run_id}*"))) if offline else 0
    return f"{run_id}-a{earlier + 1}" if earlier else run_id


def mlflow_logger(cfg: StageConfig):
    """Lightning's MLFlowLogger on the profile's store, continuing this stage's run when an attempt before made one."""
    from lightning.pytorch.loggers import MLFlowLogger

    class IntegerStepMLFlowLogger(MLFlowLogger):
        """MLflow's steps are integers, but after a resume from a NeMo checkpoint Lightning's step counter comes back
        a float: the file store writes `2.0` and then cannot read its own metric back (`int('2.0')`)."""

        def log_metrics(self, metrics, step=None):
            super().log_metrics(metrics, None if step is None else int(step))

    spec = cfg.tracking["mlflow"]
    if spec["tracking_uri"].startswith("file:"):
        # mlflow >= 3.7 refuses its file store (in "maintenance mode") unless told; the compute nodes of an offline
        # cluster have no server to write to, and `mlflow server --backend-store-uri` still reads the files
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    run_name = cfg.tracking["run_name"]
    run_id = _earlier_mlflow_run(spec, run_name)
    return IntegerStepMLFlowLogger(
        experiment_name=spec["experiment"], run_name=run_name, tracking_uri=spec["tracking_uri"], run_id=run_id,
        tags={"minitron.run_id": cfg.run_id, "minitron.stage": cfg.stage, "minitron.kind": cfg.kind})


def _earlier_mlflow_run(spec: dict, run_name: str) -> Optional[str]:
    """The id of this stage's MLflow run from an earlier attempt (set RUNNING again), or None for a first one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(spec["tracking_uri"])
    experiment = client.get_experiment_by_name(spec["experiment"])
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run_id = runs[0].info.run_id
    client.update_run(run_id, status="RUNNING")
    log.info("MLflow: continuing run %s (%s)", run_id, run_name)
    return run_id


def close(cfg: StageConfig, loggers: list, outcome: str) -> None:
    """End the stage's tracker runs in this process. A continuation leaves its MLflow run SCHEDULED for the next
    attempt (Lightning marked it FAILED on the interrupt); W&B's run is finished, failed or not, so nothing else in
    the process (a later stage of the CPU tests) logs into it."""
    if not cfg.tracking:
        return
    from lightning.pytorch.loggers import MLFlowLogger

    if outcome == CONTINUING:
        for logger in loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.update_run(logger.run_id, status="SCHEDULED")
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if outcome == FAILED else 0)
