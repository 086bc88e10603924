"""Stage entrypoints that run inside the NeMo container: `python -m jobs.<kind> --config stage.json`.

`jobs.common` is light (stdlib only) so the contract helpers import fast; every torch/NeMo import
lives in `jobs.nemo_parts` and the stage modules. The contract is docs/stage-config.md.
"""
