"""Import stage: the teacher as a NeMo 2 checkpoint at outputs.model.

`hf://ORG/NAME` or an absolute local HF directory: with fused attention (the plan's
`engine.attention`: Transformer Engine, the container) through NeMo's own `llm.import_ckpt`
(HFLlamaImporter); with unfused through the same importer adapted to megatron-core's local layer
spec (`LocalSpecHFLlamaImporter`, the spec the other stages then use too). `random` builds a randomly initialised NeMo model of the `model` shape with the run's tokenizer
and saves it the way NeMo's importers do (strategy setup, `trainer.save_checkpoint`, context dump),
minus the weight conversion; it needs no hub access.
"""

from __future__ import annotations

import functools
import logging
import sys

from jobs.contract import StageConfig
from jobs.runtime.engine import fused
from jobs.runtime.frame import is_rank_zero, run_stage
from jobs.stages import nemo_parts

log = logging.getLogger("jobs")


def save_random_model(cfg: StageConfig, output_path: str) -> None:
    from lightning.pytorch.trainer.states import TrainerFn
    from nemo import lightning as nl
    from nemo.collections import llm
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer
    from nemo.lightning.ckpt_utils import ckpt_to_context_subdir
    from nemo.lightning.io.pl import TrainerContext

    model = llm.LlamaModel(nemo_parts.new_llama_config(cfg), tokenizer=AutoTokenizer(cfg.tokenizer["path_or_id"]))
    trainer = nl.Trainer(
        devices=1, num_nodes=1, accelerator=nemo_parts.accelerator(),
        strategy=nl.MegatronStrategy(ckpt_save_optimizer=False, ckpt_async_save=False),
        plugins=nemo_parts.precision_plugin(nemo_parts.stage_precision(cfg)),
    )
    # NeMo's ModelConnector.nemo_setup / nemo_save sequence, with a real (random) init instead of lazy init.
    trainer.state.fn = TrainerFn.FITTING
    trainer.strategy.connect(model)
    trainer.strategy.setup_environment()
    model.configure_model()
    trainer.strategy._setup_optimizers = False
    trainer.strategy._init_model_parallel = False
    trainer.strategy.setup(trainer)
    trainer.save_checkpoint(output_path)
    if is_rank_zero():
        TrainerContext.from_trainer(trainer).io_dump(ckpt_to_context_subdir(output_path), yaml_attrs=["model"])
    n_params = sum(p.numel() for p in model.parameters())
    log.info("random %s (%d parameters) saved to %s", cfg.model["nemo_config"], n_params, output_path)
    nemo_parts.teardown(trainer)


def te_to_local_name(key: str) -> str:
    """`decoder.layers.*.self_attention.linear_qkv.layer_norm_weight` -> `decoder.layers.*.input_layernorm.weight`,
    `...mlp.linear_fc1.layer_norm_weight` -> `...pre_mlp_layernorm.weight`: the inverse of the local spec's
    `sharded_state_dict_keys_map` (what jobs/stages/export.py applies the other way)."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    keys_map = get_gpt_layer_local_spec(normalization="RMSNorm").submodules.sharded_state_dict_keys_map
    for local, te in keys_map.items():
        key = key.replace(f".{te}", f".{local}")
    return key


def local_spec_importer(path: str, tokenizer_dir: str):
    """NeMo's HFLlamaImporter for a model built with megatron-core's local spec (the unfused engine).

    Three differences from the TE path, nothing else: the config is built with the unfused overrides
    (local spec, fusions off, as `nemo_parts.new_llama_config` does); the HF->NeMo mapping's target names
    are renamed from TE's fused norm names to the local spec's separate norms (`te_to_local_name`), the
    transforms (QKV and gate/up merges) keep their targets, which the two specs name alike; and the local spec's torch RMSNorm, built
    without `params_dtype` (fp32), is cast to the HF weights' dtype first, so NeMo's dtype check passes (the
    TE norm is built in the model dtype). The tokenizer assets go to `tokenizer_dir` instead of NeMo's shared
    /tmp/nemo_tokenizer."""
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer
    from nemo.collections.llm.gpt.model import llama
    from nemo.collections.llm.gpt.model.llama import HFLlamaImporter
    from nemo.lightning import io as nemo_io

    class LocalSpecHFLlamaImporter(HFLlamaImporter):
        @property
        def config(self):
            # The overrides must reach the constructor: LlamaConfig's __post_init__ refuses apply_rope_fusion
            # without TE. HFLlamaImporter.config names these classes through its module's globals.
            saved = {name: getattr(llama, name) for name in ("LlamaConfig", "Llama31Config")}
            try:
                for name, cls in saved.items():
                    setattr(llama, name, functools.partial(cls, **nemo_parts.unfused_overrides()))
                return super().config
            finally:
                for name, cls in saved.items():
                    setattr(llama, name, cls)

        @property
        def tokenizer(self):
            return AutoTokenizer(self.save_hf_tokenizer_assets(str(self), save_path=tokenizer_dir))

        def convert_state(self, source, target):
            apply_transforms = nemo_io.apply_transforms
            dtype = next(source.parameters()).dtype

            def to_local_spec(src, tgt, mapping, transforms=(), **kwargs):
                module = getattr(tgt, "module", tgt)
                cast = [name for name, p in module.named_parameters() if p.is_floating_point() and p.dtype != dtype]
                for name in cast:
                    param = module.get_parameter(name)
                    param.data = param.data.to(dtype)
                if cast:
                    log.info("local spec: %d parameter(s) cast to the HF dtype %s before conversion (%s ...)",
                             len(cast), dtype, cast[0])
                for transform in transforms:
                    if isinstance(transform.target_key, str):
                        transform.target_key = te_to_local_name(transform.target_key)
                return apply_transforms(src, tgt, mapping={k: te_to_local_name(v) for k, v in mapping.items()},
                                        transforms=list(transforms), **kwargs)

            nemo_io.apply_transforms = to_local_spec  # HFLlamaImporter.convert_state calls io.apply_transforms
            try:
                return super().convert_state(source, target)
            finally:
                nemo_io.apply_transforms = apply_transforms

    return LocalSpecHFLlamaImporter(path)


def hf_path(source: str) -> str:
    """`hf://ORG/NAME` -> `ORG/NAME` (resolved by transformers: hub or HF_HOME's cache), `/abs/dir` as is."""
    return source.removeprefix("hf://")


def import_hf_source(source: str, output_path: str, tokenizer_dir: str, te_spec: bool) -> None:
    """`hf://ORG/NAME` or `/abs/hf/dir` -> a NeMo 2 checkpoint at output_path, in TE's layer spec or the local one."""
    from pathlib import Path

    from nemo.collections import llm

    if te_spec:
        # The importer builds its config from the HF config.json; the model (any complete Llama config: a bare
        # LlamaConfig() divides by 0 heads) only picks the importer class.
        hf_source = source if source.startswith("hf://") else f"hf://{source}"
        llm.import_ckpt(model=llm.LlamaModel(llm.Llama32Config1B()), source=hf_source, output_path=output_path,
                        overwrite=True)
        log.info("imported %s with Transformer Engine (NeMo's HFLlamaImporter) to %s", source, output_path)
        return
    local_spec_importer(hf_path(source), tokenizer_dir)(output_path=Path(output_path), overwrite=True)
    log.info("imported %s with megatron-core's local spec (no Transformer Engine) to %s", source, output_path)


def import_hf(cfg: StageConfig, output_path: str) -> None:
    import_hf_source(cfg.model["source"], output_path, str(cfg.stage_dir / "hf_tokenizer"), fused(cfg))


def run(cfg: StageConfig) -> None:
    if cfg.model["source"] == "random":
        save_random_model(cfg, cfg.outputs["model"])
    else:
        import_hf(cfg, cfg.outputs["model"])


def main(argv=None) -> int:
    return run_stage("import", run, argv)


if __name__ == "__main__":
    sys.exit(main())
