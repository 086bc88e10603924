"""The container probe (`minitron check --probe`): what this image, on this partition, offers the stage jobs.

Started like every stage, `python -m jobs.runtime.task jobs.stages.probe --config RUN_DIR/stages/<stage>.json`, through
the same script (Pyxis flags, mounts, environment) as the real stages. Rank 0 imports what the jobs
import, one module at a time, each in try/except (a missing or broken package is recorded, never
fatal), looks up every NeMo / megatron-core / ModelOpt function the jobs call (`FUNCTIONS`), tests
that job_dir and HF_HOME are writable from inside and whether a Hugging Face token is there, and
writes a JSON report to `outputs.report`, then the complete marker. The report is rewritten after
every step, so a process that dies inside a C extension still leaves what it found and where it
died (`step`). Other ranks (one per GPU under srun) wait for rank 0 and exit 0.

Standard library only at import time: this module must run in any Python the profile names. The
launcher compares the report with its compatibility table (launcher/app/compat.py).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Optional

from jobs.contract import RunLayout, read_markers, read_stage_config, write_complete, write_json_atomic
from jobs.stages import drift

REPORT_VERSION = 1
OTHER_RANKS_WAIT_S = 30 * 60

# Distribution name → the module whose import proves it works (in this order: torch first, TE before
# NeMo so a TE that breaks NeMo's import is seen on its own).
PACKAGES: tuple[tuple[str, str, str], ...] = (
    # (report key, distribution names to ask importlib.metadata, module to import)
    ("torch", "torch", "torch"),
    ("transformer-engine", "transformer_engine transformer-engine transformer_engine_torch", "transformer_engine"),
    ("megatron-core", "megatron-core megatron_core", "megatron.core"),
    ("modelopt", "nvidia-modelopt nvidia_modelopt", "modelopt"),
    ("nemo", "nemo_toolkit nemo-toolkit", "nemo.collections.llm"),  # what the jobs import (NeMo 3 dropped it)
    ("lightning", "lightning pytorch-lightning", "lightning"),
    ("transformers", "transformers", "transformers"),
    ("tokenizers", "tokenizers", "tokenizers"),
    ("datasets", "datasets", "datasets"),
    ("fiddle", "fiddle", "fiddle"),
    ("tensorboard", "tensorboard", "tensorboard"),
    ("matplotlib", "matplotlib", "matplotlib"),
    ("numpy", "numpy", "numpy"),
    ("yaml", "PyYAML pyyaml", "yaml"),
    # experiment trackers (jobs/stages/tracking.py): needed only where the profile's `tracking` turns one on
    ("wandb", "wandb", "wandb"),
    ("mlflow", "mlflow-skinny mlflow_skinny mlflow", "mlflow"),
)

# Every NeMo / megatron-core / ModelOpt / Lightning name the stage jobs use: (module, attribute, stage kinds
# that use it). tests/test_compat.py checks this list against the imports of jobs/stages/*.py. A name starting
# with "_" is NeMo/ModelOpt private API (it may vanish in any release).
FUNCTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # nemo.collections.llm
    ("nemo.collections.llm", "import_ckpt", ("import",)),
    ("nemo.collections.llm", "export_ckpt", ("export",)),
    ("nemo.collections.llm", "train", ("finetune", "distill")),
    ("nemo.collections.llm", "validate", ("report",)),
    ("nemo.collections.llm", "LlamaModel", ("import",)),
    ("nemo.collections.llm", "LlamaConfig", ("import",)),
    ("nemo.collections.llm", "Llama32Config1B", ("import",)),
    ("nemo.collections.llm", "GPTModel", ("finetune", "prune", "distill", "report")),
    ("nemo.collections.llm", "GPTConfig", ("import",)),
    ("nemo.collections.llm", "PreTrainingDataModule", ("finetune", "prune", "distill", "report")),
    ("nemo.collections.llm.gpt.model.llama", "Llama31Config", ("import",)),
    ("nemo.collections.llm.gpt.model.base", "local_layer_spec", ("import", "finetune", "prune", "distill", "report")),
    ("nemo.collections.llm.gpt.model.llama", "Llama31Config8B", ("import",)),
    ("nemo.collections.llm.gpt.model.llama", "HFLlamaImporter", ("import",)),
    ("nemo.collections.llm.api", "load_connector_from_trainer_ckpt", ("export",)),
    ("nemo.collections.llm.modelopt", "PruningConfig", ("prune",)),
    ("nemo.collections.llm.modelopt", "prune_language_model", ("prune",)),
    ("nemo.collections.llm.modelopt", "save_pruned_model", ("prune",)),
    ("nemo.collections.llm.modelopt", "DistillationGPTModel", ("distill",)),
    ("nemo.collections.llm.modelopt.model_utils", "_set_gpt_mamba_modelopt_spec", ("prune",)),
    ("nemo.collections.llm.inference.base", "_setup_trainer_and_restore_model", ("prune",)),
    ("nemo.collections.common.tokenizers.huggingface.auto_tokenizer", "AutoTokenizer", ("import",)),
    # nemo.lightning
    ("nemo.lightning", "Trainer", ("import", "finetune", "prune", "distill", "report")),
    ("nemo.lightning", "MegatronStrategy", ("import", "finetune", "prune", "distill", "report")),
    ("nemo.lightning", "MegatronMixedPrecision", ("import", "finetune", "prune", "distill", "report")),
    ("nemo.lightning", "NeMoLogger", ("finetune", "distill", "report")),
    ("nemo.lightning", "ModelCheckpoint", ("finetune", "distill")),
    ("nemo.lightning", "AutoResume", ("finetune", "distill", "report")),
    ("nemo.lightning", "RestoreConfig", ("finetune", "distill", "report")),
    ("nemo.lightning.io", "load_context", ("finetune", "prune", "distill", "report")),
    ("nemo.lightning.io", "apply_transforms", ("import",)),
    ("nemo.lightning.io.pl", "TrainerContext", ("import",)),
    ("nemo.lightning.io.state", "_ModelState", ("export",)),
    ("nemo.lightning.base", "teardown", ("finetune", "prune", "distill", "report")),
    ("nemo.lightning.ckpt_utils", "ckpt_to_context_subdir", ("import", "finetune", "prune", "distill", "report")),
    ("nemo.lightning.pytorch.callbacks", "PreemptionCallback", ("finetune", "distill")),
    ("nemo.lightning.pytorch.optim", "CosineAnnealingScheduler", ("finetune", "distill")),
    ("nemo.lightning.pytorch.optim", "MegatronOptimizerModule", ("finetune", "distill")),
    ("nemo.lightning._strategy_lib", "setup_megatron_optimizer", ("finetune", "distill")),
    # megatron-core
    ("megatron.core.distributed", "DistributedDataParallelConfig", ("finetune", "distill")),
    ("megatron.core.optimizer", "OptimizerConfig", ("finetune", "distill")),
    ("megatron.core.optimizer", "get_megatron_optimizer", ("finetune", "distill")),
    ("megatron.core.dist_checkpointing.validation", "StrictHandling", ("finetune", "prune", "distill", "report")),
    ("megatron.core.num_microbatches_calculator", "destroy_num_microbatches_calculator",
     ("finetune", "prune", "distill", "report")),
    ("megatron.core.models.gpt.gpt_layer_specs", "get_gpt_layer_local_spec", ("import", "export")),
    ("megatron.core.datasets.indexed_dataset", "IndexedDatasetBuilder", ("data",)),
    ("megatron.core.datasets.indexed_dataset", "DType", ("data",)),
    # ModelOpt (pruning without Transformer Engine registers torch's RMSNorm)
    ("modelopt.torch.nas.modules.norm", "_DynamicLayerNorm", ("prune",)),
    ("modelopt.torch.nas.registry", "DMRegistry", ("prune",)),
    ("modelopt.torch.nas.traced_hp", "TracedHp", ("prune",)),
    # Lightning, fiddle
    ("lightning.pytorch", "Callback", ("finetune", "distill")),
    ("lightning.pytorch", "seed_everything", ("finetune", "prune", "distill", "report")),
    ("lightning.pytorch.loggers", "TensorBoardLogger", ("finetune", "distill")),
    ("lightning.pytorch.loggers", "WandbLogger", ("finetune", "distill")),
    ("lightning.pytorch.loggers", "MLFlowLogger", ("finetune", "distill")),
    ("lightning.pytorch.trainer.states", "TrainerFn", ("import",)),
    ("fiddle", "build", ("finetune", "prune", "distill", "report")),
    # data and report
    ("datasets", "load_dataset", ("data",)),
    ("tokenizers", "Tokenizer", ("data",)),
    ("tokenizers", "trainers", ("data",)),
    ("transformers", "AutoTokenizer", ("data",)),
    ("transformers", "PreTrainedTokenizerFast", ("data",)),
    ("tensorboard.backend.event_processing.event_accumulator", "EventAccumulator", ("report",)),
)

# Variables worth seeing in the report (never a token's value: only whether one is there).
ENV_SHOWN = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_PARTITION",
             "SLURMD_NODENAME", "SLURM_JOB_GPUS", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
             "NCCL_NVLS_ENABLE", "PYXIS_VERSION", "ENROOT_VERSION", "NVIDIA_PYTORCH_VERSION", "NEMO_VERSION")
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def _error(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()[:400]


def _dist_version(names: str) -> Optional[str]:
    from importlib import metadata

    for name in names.split():
        try:
            return metadata.version(name)
        except Exception:  # noqa: BLE001 - not installed under this name
            continue
    return None


class Probe:
    """Collects the report step by step and rewrites it after each one."""

    def __init__(self, path: str, stage: str, settings: dict):
        self.path = path
        self.report: dict[str, Any] = {
            "report_version": REPORT_VERSION, "stage": stage, "role": settings.get("role"),
            "partition": settings.get("partition"), "image": settings.get("image"),
            "host": socket.gethostname(), "started_at": round(time.time(), 3), "finished": False, "step": "start",
            "python": {"version": platform.python_version(), "executable": sys.executable},
            "versions": {}, "imports": {}, "functions": [], "capabilities": {}, "gpus": {},
            "env": {k: os.environ[k] for k in ENV_SHOWN if k in os.environ}, "errors": [],
        }

    def save(self) -> None:
        try:
            write_json_atomic(self.path, self.report)
        except OSError as exc:  # the job dir itself is not writable: say so on the log at least
            print(f"minitron probe: cannot write {self.path}: {exc}", file=sys.stderr, flush=True)

    def step(self, name: str) -> None:
        self.report["step"] = name
        self.save()

    # -- steps ------------------------------------------------------------------------------------
    def versions_and_imports(self) -> None:
        for key, dists, module in PACKAGES:
            self.step(f"import {module}")
            self.report["versions"][key] = _dist_version(dists)
            start = time.time()
            entry: dict[str, Any] = {"module": module}
            try:
                importlib.import_module(module)
                entry["ok"] = True
                version = getattr(sys.modules.get(module.split(".")[0]), "__version__", None)
                if key == "megatron-core" and version is None:
                    try:
                        version = importlib.import_module("megatron.core.package_info").__version__
                    except Exception:  # noqa: BLE001
                        version = None
                if isinstance(version, str) and not self.report["versions"][key]:
                    self.report["versions"][key] = version
            except BaseException as exc:  # noqa: BLE001 - SystemExit from a package's import too
                entry["ok"], entry["error"] = False, _error(exc)
            entry["seconds"] = round(time.time() - start, 2)
            self.report["imports"][key] = entry
        self.step("import transformer_engine.pytorch")
        try:
            importlib.import_module("transformer_engine.pytorch")
            self.report["imports"]["transformer-engine.pytorch"] = {"module": "transformer_engine.pytorch", "ok": True}
        except BaseException as exc:  # noqa: BLE001
            self.report["imports"]["transformer-engine.pytorch"] = {"module": "transformer_engine.pytorch",
                                                                    "ok": False, "error": _error(exc)}

    def torch_and_gpus(self) -> None:
        self.step("torch.cuda")
        gpus: dict[str, Any] = {"torch_device_count": None, "cuda": None, "cudnn": None, "names": [],
                                "memory_gib": [], "nvidia_smi": None}
        torch = sys.modules.get("torch")
        if torch is not None:
            try:
                gpus["cuda"] = torch.version.cuda
                gpus["cuda_available"] = bool(torch.cuda.is_available())
                gpus["torch_device_count"] = int(torch.cuda.device_count())
                for index in range(gpus["torch_device_count"]):
                    props = torch.cuda.get_device_properties(index)
                    gpus["names"].append(props.name)
                    gpus["memory_gib"].append(round(props.total_memory / 2**30, 1))
                if gpus["torch_device_count"]:
                    gpus["bf16"] = bool(torch.cuda.is_bf16_supported())
                    try:  # on its own: a shadowing cuDNN (seen with a carried TE) raises here, the GPUs stay known
                        gpus["cudnn"] = torch.backends.cudnn.version()
                    except BaseException as exc:  # noqa: BLE001
                        gpus["cudnn_error"] = _error(exc)
            except BaseException as exc:  # noqa: BLE001
                self.report["errors"].append(f"torch.cuda: {_error(exc)}")
        self.step("nvidia-smi")
        try:
            proc = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                   "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL)
            rows = [line.split(",") for line in proc.stdout.splitlines() if line.strip()]
            gpus["nvidia_smi"] = {"rc": proc.returncode, "count": len(rows),
                                  "driver": rows[0][2].strip() if rows and len(rows[0]) > 2 else None}
        except (OSError, subprocess.TimeoutExpired) as exc:
            gpus["nvidia_smi"] = {"rc": None, "count": 0, "driver": None, "error": _error(exc)}
        self.report["gpus"] = gpus
        self.report["versions"]["cuda"] = gpus["cuda"]
        self.report["versions"]["nvidia-driver"] = (gpus["nvidia_smi"] or {}).get("driver")

    def functions(self) -> None:
        self.step("functions")
        found = []
        for module, attribute, used_by in FUNCTIONS:
            entry: dict[str, Any] = {"name": f"{module}.{attribute}", "used_by": list(used_by), "present": False}
            try:
                entry["present"] = hasattr(importlib.import_module(module), attribute)
                if not entry["present"]:
                    entry["error"] = f"{module} has no attribute {attribute}"
            except BaseException as exc:  # noqa: BLE001
                entry["error"] = _error(exc)
            found.append(entry)
        self.report["functions"] = found

    def optimizer_api(self) -> None:
        """How the jobs will call megatron-core's optimizer from NeMo (jobs/stages/drift.py): `native`,
        `adapted` (megatron-core 0.16: NeMo's keywords dropped for its defaults) or `incompatible` (ok False;
        None when it cannot be read)."""
        self.step("optimizer api")
        result: dict[str, Any] = {"ok": None}
        try:
            mode = drift.optimizer_call(importlib.import_module("megatron.core.optimizer").get_megatron_optimizer)
            result = {"ok": mode != drift.INCOMPATIBLE, "mode": mode}
        except BaseException as exc:  # noqa: BLE001
            result["error"] = _error(exc)
        self.report["capabilities"]["optimizer_api"] = result

    def writable(self, directory: str) -> dict[str, Any]:
        """Make the directory if need be (as the jobs would), then create and remove a file in it."""
        result: dict[str, Any] = {"path": directory, "writable": False}
        try:
            os.makedirs(directory, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".minitron-probe.", dir=directory)
            os.close(fd)
            os.unlink(name)
            result["writable"] = True
        except OSError as exc:
            result["error"] = _error(exc)
        return result

    def file_system_and_token(self, work_dir: str, job_dir: str) -> None:
        self.step("file system")
        caps = self.report["capabilities"]
        caps["job_dir"] = self.writable(work_dir)
        caps["job_dir"]["job_dir"] = job_dir
        hf_home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
        caps["hf_home"] = self.writable(hf_home)
        caps["hf_home"]["from"] = "HF_HOME" if os.environ.get("HF_HOME") else "default (~/.cache/huggingface)"
        source = next((name for name in TOKEN_VARS if os.environ.get(name)), None)
        token_file = os.environ.get("HF_TOKEN_PATH") or os.path.join(hf_home, "token")
        if source is None and os.path.isfile(token_file) and os.path.getsize(token_file) > 0:
            source = "token file"
        caps["token"] = {"present": source is not None, "source": source}
        caps["hf_offline"] = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True", "YES", "yes")

    def summarise(self) -> None:
        imports, caps = self.report["imports"], self.report["capabilities"]
        caps["te_importable"] = bool(imports.get("transformer-engine", {}).get("ok"))
        caps["gpus_per_node"] = self.report["gpus"].get("torch_device_count")
        caps["nemo_llm_importable"] = any(f["present"] for f in self.report["functions"]
                                          if f["name"].startswith("nemo.collections.llm."))
        caps["functions_missing"] = [f["name"] for f in self.report["functions"] if not f["present"]]
        caps["job_dir_writable"] = caps["job_dir"]["writable"]
        caps["hf_home_writable"] = caps["hf_home"]["writable"]
        caps["token_present"] = caps["token"]["present"]
        caps["optimizer_api_ok"] = (caps.get("optimizer_api") or {}).get("ok")


def _wait_for_rank_zero(path: str) -> None:
    """srun --wait ends the step shortly after the first task exits: stay until rank 0 has written."""
    deadline = time.time() + OTHER_RANKS_WAIT_S
    while time.time() < deadline:
        try:
            with open(path, encoding="utf-8") as handle:
                if json.load(handle).get("finished"):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(1.0)


def main(argv: list[str]) -> int:
    if "--config" not in argv or argv.index("--config") + 1 >= len(argv):
        print("usage: python -m jobs.runtime.task jobs.stages.probe --config STAGE.json", file=sys.stderr)
        return 2
    cfg = read_stage_config(argv[argv.index("--config") + 1])
    path = cfg.outputs["report"]
    if int(os.environ.get("RANK", "0") or 0) != 0:
        _wait_for_rank_zero(path)
        return 0
    probe = Probe(path, cfg.stage, cfg.probe or {})
    for name, step in (("imports", probe.versions_and_imports), ("gpus", probe.torch_and_gpus),
                       ("functions", probe.functions), ("optimizer api", probe.optimizer_api),
                       ("file system", lambda: probe.file_system_and_token(str(cfg.stage_dir), cfg.probe["job_dir"]))):
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - a bug here must not hide what was found
            probe.report["errors"].append(f"{name}: {_error(exc)}")
    probe.report.setdefault("capabilities", {}).setdefault("job_dir", {"writable": False})
    probe.report["capabilities"].setdefault("hf_home", {"writable": False})
    probe.report["capabilities"].setdefault("token", {"present": False, "source": None})
    probe.summarise()
    probe.report["finished"] = True
    probe.report["step"] = "done"
    probe.report["seconds"] = round(time.time() - probe.report["started_at"], 2)
    probe.save()
    if not os.path.exists(path):
        print(f"minitron probe: no report could be written to {path}", file=sys.stderr, flush=True)
        return 1
    if not read_markers(RunLayout(cfg.run_dir), cfg.stage).complete:
        write_complete(RunLayout(cfg.run_dir), cfg.stage, cfg.outputs)
    print(f"minitron probe: report written to {path} in {probe.report['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
