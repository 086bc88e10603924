"""HF import without Transformer Engine (megatron-core's local spec, as here): a tiny random Llama saved
with `transformers` and a locally trained tokenizer, imported from its directory, and NeMo's forward of the
imported checkpoint against `transformers`' forward of the original on the same tokens (fp32, CPU)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.nemo

SHAPE = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0)


def test_local_hf_directory_imports_without_te_and_keeps_the_logits(nemo_cpu, tmp_path):
    from jobs import common, import_ckpt
    from jobs.tools import hf_roundtrip

    assert not common.te_available()  # this test is the local-spec path
    hf_dir = hf_roundtrip.make(str(tmp_path / "hf"), shape=SHAPE, vocab=320)
    ckpt = tmp_path / "nemo" / "model"
    import_ckpt.import_hf_source(str(hf_dir), str(ckpt), str(tmp_path / "tok"))
    model_yaml = (ckpt / "context" / "model.yaml").read_text()
    assert "apply_rope_fusion: false" in model_yaml
    from jobs import data
    batch = hf_roundtrip.tokens(str(hf_dir), data.pydoc_topics_splits()["validation"])
    row = hf_roundtrip.compare("import", str(ckpt), str(hf_dir), batch)
    print(json.dumps(row))
    assert row["max_abs_diff"] < 1e-3, row
    assert row["argmax_agreement"] == 1.0, row
