"""The plan decides how a job runs its model; the job checks it can (engine section of the stage config).

`engine.attention` is the layer spec: `fused` is Transformer Engine's (the NeMo container's), `unfused`
megatron-core's local spec, used even where TE is installed. A plan for fused attention on a stack
without an importable TE is refused before any model is built: exit 2 (StageExit.CONFIG) with the
setting and its fix, never a silent switch to the other path.
"""

from __future__ import annotations

from functools import lru_cache

from jobs.contract import ConfigError, StageConfig


@lru_cache(maxsize=1)
def te_available() -> bool:
    """Same test NeMo uses for HAVE_TE (a plain import), so our view of the stack agrees with NeMo's."""
    try:
        import transformer_engine  # noqa: F401
    except Exception:  # a broken TE install counts as absent, as in nemo.utils.import_utils.safe_import
        return False
    return True


def fused(cfg: StageConfig) -> bool:
    """Whether the stage runs Transformer Engine's layer spec (the plan's `engine.attention`)."""
    return cfg.engine["attention"] == "fused"


def check_engine(cfg: StageConfig) -> None:
    """ConfigError when this stack cannot run what the plan chose."""
    if cfg.engine is not None and fused(cfg) and not te_available():
        raise ConfigError("engine.attention is 'fused' (Transformer Engine's layer spec) but transformer_engine is "
                          "not importable here: run in the NeMo container, or set `attention: unfused` in the "
                          "cluster profile and submit again (megatron-core's local spec, slower)")
