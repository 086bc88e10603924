"""HF import without Transformer Engine (megatron-core's local spec, as here): a tiny random Llama saved
with `transformers` and a locally trained tokenizer, imported from its directory, and NeMo's forward of the
imported checkpoint against `transformers`' forward of the original on the same tokens (fp32, CPU).

It runs in a process of its own, as the import stage does on a cluster: NeMo's HF importer leaves
process-wide state behind (after it, an in-process bf16 export in the same session wrote fp32 weights),
which must not leak into the other stage tests of the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.nemo

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTED_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                         "NODE_RANK", "GROUP_RANK")
SHAPE = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0)
SCRIPT = """
import json, sys
sys.path[:0] = [sys.argv[1]]
from jobs.runtime import cpu
cpu.install()
from jobs.runtime.engine import te_available
from jobs.stages import data, import_ckpt  # the stage's own imports, NeMo's among them, in the stage's order
from tools import hf_roundtrip
assert not te_available()  # this test is the local-spec path
root = sys.argv[2]
hf_dir = hf_roundtrip.make(root + "/hf", shape=json.loads(sys.argv[3]), vocab=320)
ckpt = root + "/nemo/model"
import_ckpt.import_hf_source(str(hf_dir), ckpt, root + "/tok", te_spec=False)
batch = hf_roundtrip.tokens(str(hf_dir), data.pydoc_topics_splits()["validation"])
row = hf_roundtrip.compare("import", ckpt, str(hf_dir), batch)
row["model_yaml"] = open(ckpt + "/context/model.yaml").read()
print("RESULT " + json.dumps(row), flush=True)
"""


def test_local_hf_directory_imports_without_te_and_keeps_the_logits(tmp_path):
    # Not the session's own distributed variables: in-process stage tests leave MASTER_PORT set to a port their
    # process group still listens on (with random test order, this test may run after them).
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO), str(tmp_path), json.dumps(SHAPE)],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env={**env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    row = json.loads(line[len("RESULT "):])
    assert "apply_rope_fusion: false" in row["model_yaml"]
    assert row["max_abs_diff"] < 1e-3, row
    assert row["argmax_agreement"] == 1.0, row
