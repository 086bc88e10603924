"""Import stage: the teacher as a NeMo 2 checkpoint at outputs.model.

`hf://ORG/NAME` or an absolute local HF directory goes through `llm.import_ckpt` (NeMo's
HFLlamaImporter). `random` builds a randomly initialised NeMo model of the `model` shape with the
run's tokenizer and saves it the way NeMo's importers do (strategy setup, `trainer.save_checkpoint`,
context dump), minus the weight conversion: no HF round trip, so it also works without Transformer
Engine (NeMo's HF key mapping targets TE layer names) and needs no hub access.
"""

from __future__ import annotations

import logging
import sys

from jobs import common

log = logging.getLogger("jobs")


def save_random_model(cfg: common.StageConfig, output_path: str) -> None:
    from lightning.pytorch.trainer.states import TrainerFn
    from nemo import lightning as nl
    from nemo.collections import llm
    from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer
    from nemo.lightning.ckpt_utils import ckpt_to_context_subdir
    from nemo.lightning.io.pl import TrainerContext

    from jobs import nemo_parts

    model = llm.LlamaModel(nemo_parts.new_llama_config(cfg.model), tokenizer=AutoTokenizer(cfg.tokenizer["path_or_id"]))
    trainer = nl.Trainer(
        devices=1, num_nodes=1, accelerator=nemo_parts.accelerator(),
        strategy=nl.MegatronStrategy(ckpt_save_optimizer=False, ckpt_async_save=False),
        plugins=nemo_parts.precision_plugin(nemo_parts.default_precision()),
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
    if common.is_rank_zero():
        TrainerContext.from_trainer(trainer).io_dump(ckpt_to_context_subdir(output_path), yaml_attrs=["model"])
    n_params = sum(p.numel() for p in model.parameters())
    log.info("random %s (%d parameters) saved to %s", cfg.model["nemo_config"], n_params, output_path)
    nemo_parts.teardown(trainer)


def import_hf(cfg: common.StageConfig, output_path: str) -> None:
    from nemo.collections import llm

    from jobs import nemo_parts

    if not common.te_available():
        raise RuntimeError("HF import needs Transformer Engine: NeMo's HF->NeMo key mapping targets TE layer "
                           "names. Use the NeMo container, or `random` / `nemo:` sources off the cluster.")
    source = cfg.model["source"]
    hf_source = source if source.startswith("hf://") else f"hf://{source}"
    llm.import_ckpt(model=llm.LlamaModel(nemo_parts.new_llama_config(cfg.model)), source=hf_source,
                    output_path=output_path, overwrite=True)


def run(cfg: common.StageConfig) -> None:
    if cfg.model["source"] == "random":
        save_random_model(cfg, cfg.outputs["model"])
    else:
        import_hf(cfg, cfg.outputs["model"])


def main(argv=None) -> int:
    return common.run_stage("import", run, argv)


if __name__ == "__main__":
    sys.exit(main())
