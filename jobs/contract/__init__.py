"""The launcher ↔ jobs contract, written down once (docs/stage-config.md). Standard library only.

Both sides import this package and nothing else of each other: the launcher (login node, no torch)
writes stage configs and reads markers and progress lines through it; the jobs (inside the
container) read stage configs and write markers and progress lines through it. It holds the stage
kinds (kinds.py), the run directory's layout (layout.py), the marker files (markers.py), the exit
codes (exits.py), the progress line (progress.py), the typed, versioned stage config (config.py)
and the safe file reads and writes they share (files.py).
"""

from .config import (ATTENTION, DATA_ROLES, MLFLOW_SCHEMES, PRECISIONS, PRUNE_TARGETS, SCHEMA_VERSION, SECTION_KEYS,
                     TRACKERS, WANDB_MODES, ConfigError, StageConfig, file_uri_path, read_stage_config, seq_length,
                     stage_config_text, validate, write_stage_config)
from .exits import CONTINUE_SIGNAL, StageExit
from .files import read_bounded, write_json_atomic, write_text_atomic
from .kinds import (BY_NAME, KINDS, PIPELINE_KINDS, PROBE, VARIANT, Estimate, Input, Output, Per, Resources,
                    StageKind, stage_name)
from .layout import RunLayout
from .markers import (PER_ATTEMPT_MARKERS, STARTED_FIELDS, Failure, Marker, Markers, Started, read_markers,
                      write_complete, write_continue, write_failure)
from .progress import Progress, last_progress, note_progress, parse_progress, progress_line

__all__ = [
    "ATTENTION", "BY_NAME", "CONTINUE_SIGNAL", "DATA_ROLES", "KINDS", "MLFLOW_SCHEMES", "PER_ATTEMPT_MARKERS",
    "PIPELINE_KINDS", "PRECISIONS", "PROBE", "PRUNE_TARGETS", "SCHEMA_VERSION", "SECTION_KEYS",
    "STARTED_FIELDS", "TRACKERS", "VARIANT", "WANDB_MODES", "ConfigError", "Estimate", "Failure", "Input", "Marker", "Markers", "Output", "Per",
    "Progress", "Resources", "RunLayout", "StageConfig", "StageExit", "StageKind", "Started",
    "file_uri_path", "last_progress", "note_progress", "parse_progress", "progress_line",
    "read_bounded", "read_markers", "read_stage_config", "seq_length", "stage_config_text", "stage_name",
    "validate", "write_complete", "write_continue", "write_failure", "write_json_atomic", "write_stage_config",
    "write_text_atomic",
]
