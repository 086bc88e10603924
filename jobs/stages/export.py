"""Export stage: each distilled student (`inputs.<name>`: its NeMo checkpoint) to a Hugging Face
directory at outputs.<name>, through `llm.export_ckpt(..., target="hf")` (NeMo's HFLlamaExporter).

NeMo's exporter maps Transformer Engine layer names (`linear_qkv.layer_norm_weight`, ...). A model
of the unfused engine (megatron-core's local spec) has megatron-core's local names instead (`input_layernorm.weight`, ...); for that
case the exporter gets its source state under the TE names, renamed with the local spec's own
`sharded_state_dict_keys_map` (the map megatron uses to keep local-spec checkpoints TE-compatible),
and cast to the HF model's dtype: the local spec's torch RMSNorm is built without `params_dtype`,
so a bf16 checkpoint loads its norm weights as fp32, which the exporter's dtype check rejects
(seen on the GPU device).
"""

from __future__ import annotations

import sys

from jobs.contract import StageConfig
from jobs.runtime.engine import fused
from jobs.runtime.frame import run_stage


def local_to_te_names(state_dict: dict) -> dict:
    """`decoder.layers.N.input_layernorm.weight` -> `...self_attention.linear_qkv.layer_norm_weight`, etc."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    keys_map = get_gpt_layer_local_spec(normalization="RMSNorm").submodules.sharded_state_dict_keys_map
    renamed = {}
    for key, value in state_dict.items():
        for local, te in keys_map.items():
            key = key.replace(f".{local}", f".{te}")
        renamed[key] = value
    return renamed


def local_spec_connector(path, target: str):
    """NeMo's default exporter, fed TE-named source state in the HF model's dtype (the model itself is
    left as loaded)."""
    import torch
    from nemo.collections.llm.api import load_connector_from_trainer_ckpt
    from nemo.lightning.io.state import _ModelState

    connector = load_connector_from_trainer_ckpt(path, target)
    convert_state = connector.convert_state

    def convert_with_te_names(source, target_model, source_config=None):
        dtype = next(target_model.parameters()).dtype
        state = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                 for k, v in local_to_te_names(getattr(source, "module", source).state_dict()).items()}
        return convert_state(_ModelState(state, source.config), target_model, source_config)

    connector.convert_state = convert_with_te_names
    return connector


def run(cfg: StageConfig) -> None:
    from nemo.collections import llm
    from nemo.collections.llm.api import load_connector_from_trainer_ckpt

    load_connector = load_connector_from_trainer_ckpt if fused(cfg) else local_spec_connector
    for name, path in cfg.inputs.items():
        llm.export_ckpt(path, "hf", output_path=cfg.outputs[name], overwrite=True, load_connector=load_connector)


def main(argv=None) -> int:
    return run_stage("export", run, argv)


if __name__ == "__main__":
    sys.exit(main())
