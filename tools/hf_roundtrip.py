"""HF round trip of the pipeline (issue 13 item 8): a small random Llama saved with `transformers`, imported
by the pipeline (`hf://` and a local directory, with and without Transformer Engine), and each exported
student loaded back by `transformers`, its logits compared with NeMo's forward of the same checkpoint.

    python -m tools.hf_roundtrip make DIR [--hf-home H --repo-id ORG/NAME]
        a byte-level BPE (vocab 1024, trained on the pydoc-topics train split, as the data stage trains one) and
        a random LlamaForCausalLM of the hf-roundtrip recipe's shape (6 layers, hidden 384, ffn 1024, 8 heads,
        4 KV heads, bf16) saved in DIR; with --hf-home also laid out as the hub cache of ORG/NAME there, so
        `hf://ORG/NAME` resolves offline (HF_HUB_OFFLINE=1, HF_HOME=H) exactly as a downloaded model would.
    python -m tools.hf_roundtrip check RUN_DIR --hf DIR [--other-source SRC] [--out JSON]
        in one process, NeMo's forward (the checkpoint loaded as the export stage loads it, cast to fp32) vs
        `transformers` (fp32) on the same tokens (4 x 128 validation tokens): the run's imported teacher vs
        DIR; each exported student (stages/export.json) vs its HF directory; with --other-source, last, a
        second import of SRC (the other form: hf:// or directory) vs DIR. Prints each row and rewrites --out
        after each.
    python -m tools.hf_roundtrip import-compare --hf DIR --source SRC --work W [--out JSON]
        import SRC into W/model (reused when there) and compare it with DIR: run once with and once without
        NVIDIA_TF32_OVERRIDE=0 to see TF32's share of the TE path's difference.

Which spec NeMo uses follows `jobs.runtime.engine.te_available()`, as the device runs' plans do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from jobs.runtime.engine import te_available
from jobs.stages import data

SHAPE = dict(num_hidden_layers=6, hidden_size=384, intermediate_size=1024, num_attention_heads=8,
             num_key_value_heads=4, max_position_embeddings=128, rope_theta=10000.0)
VOCAB = 1024
SEQ, BATCH = 128, 4


def make(out_dir: str, hf_home: str | None = None, repo_id: str = "minitron-test/tiny-llama",
         shape: dict | None = None, vocab: int = VOCAB, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM


    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp, "train.jsonl")
        jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in data.pydoc_topics_splits()["train"] if t.strip()))
        data.train_bpe(jsonl, "text", vocab, str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **(shape or SHAPE))
    model = LlamaForCausalLM(config).bfloat16()
    model.save_pretrained(str(out), safe_serialization=True)
    print(f"saved a random Llama ({sum(p.numel() for p in model.parameters())} parameters, vocab {len(tok)}, bf16) "
          f"and its tokenizer to {out}")
    if hf_home:
        repo = Path(hf_home, "hub", "models--" + repo_id.replace("/", "--"))
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        for f in out.iterdir():
            if f.is_file():
                shutil.copy2(f, snapshot / f.name)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        print(f"hub cache of {repo_id} at {repo} (hf://{repo_id} with HF_HOME={hf_home} HF_HUB_OFFLINE=1)")
    return out


def tokens(hf_dir: str, texts: list[str]):
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    ids = [i for t in texts for i in tok.encode(t, add_special_tokens=False) + [tok.eos_token_id]]
    return torch.tensor(ids[: SEQ * BATCH]).view(BATCH, SEQ)


def hf_logits(hf_dir: str, batch):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    if torch.cuda.is_available():
        model, batch = model.cuda(), batch.cuda()
    with torch.no_grad():
        out = model(batch).logits.float().cpu()
    del model
    return out


def _nemo_stages():
    """The NeMo stage modules (NeMo's 38 s import): only the commands that load checkpoints need them."""
    from jobs.stages import import_ckpt, nemo_parts

    return import_ckpt, nemo_parts


def nemo_logits(ckpt: str, batch):
    """The checkpoint loaded the way the export stage loads it (`nemo_load` through the HF exporter's
    connector, with the stages' load strictness), the megatron GPTModel cast to fp32, one forward."""
    import torch
    from megatron.core.models.gpt import GPTModel
    from nemo import lightning as nl
    from nemo.collections.llm.api import load_connector_from_trainer_ckpt

    _, nemo_parts = _nemo_stages()

    trainer = nl.Trainer(devices=1, accelerator=nemo_parts.accelerator(), logger=False,
                         strategy=nl.MegatronStrategy(ddp="pytorch", setup_optimizers=False,
                                                      ckpt_load_strictness=nemo_parts.ckpt_load_strictness()))
    connector = load_connector_from_trainer_ckpt(ckpt, "hf")
    model, trainer = connector.nemo_load(ckpt, trainer=trainer, cpu=not torch.cuda.is_available())
    gpt = model
    while not isinstance(gpt, GPTModel):
        gpt = gpt.module
    gpt = gpt.float().eval()
    device = next(gpt.parameters()).device
    b, s = batch.shape
    position_ids = torch.arange(s, device=device).unsqueeze(0).expand(b, s)
    # TE's attention is causal by itself; the local spec's unfused softmax takes the mask (True = masked)
    mask = None if te_available() else torch.triu(torch.ones(1, 1, s, s, dtype=torch.bool, device=device), 1)
    with torch.no_grad():
        out = gpt(input_ids=batch.to(device), position_ids=position_ids, attention_mask=mask).float().cpu()
    vocab = gpt.config.vocab_size if hasattr(gpt.config, "vocab_size") else out.shape[-1]
    nemo_parts.teardown(trainer)
    del model, gpt
    return out, vocab


def compare(label: str, ckpt: str, hf_dir: str, batch) -> dict:
    ref = hf_logits(hf_dir, batch)
    got, _ = nemo_logits(ckpt, batch)
    got = got[..., : ref.shape[-1]]  # NeMo pads the vocabulary to a multiple of make_vocab_size_divisible_by
    diff = (got - ref).abs()
    row = {"what": label, "nemo_ckpt": str(ckpt), "hf_dir": str(hf_dir), "tokens": list(batch.shape),
           "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
           "max_abs_logit": float(ref.abs().max()),
           "argmax_agreement": float((got.argmax(-1) == ref.argmax(-1)).float().mean())}
    print(json.dumps(row), flush=True)
    return row


def check(run_dir: str, hf_dir: str, other_source: str | None = None, out: str | None = None) -> dict:
    import nemo.collections.llm  # noqa: F401 - NeMo's import first, as in the stages

    import_ckpt, _ = _nemo_stages()

    run = Path(run_dir)
    stages = {p.stem: json.loads(p.read_text()) for p in (run / "stages").glob("*.json")}
    imp, export = stages["import"], stages.get("export")
    prefixes = next((c["data"]["prefixes"] for c in stages.values() if "prefixes" in (c.get("data") or {})), None)
    val = Path(prefixes["validation"]).parent / "validation.jsonl" if prefixes else None
    if val and val.exists():
        texts = [json.loads(line)["text"] for line in val.read_text().splitlines()]
    else:
            texts = data.pydoc_topics_splits()["validation"]
    batch = tokens(hf_dir, texts)
    result = {"te_available": te_available(), "run_dir": str(run), "source": imp["model"]["source"], "rows": []}

    def add(row: dict) -> None:  # written after every row: a later comparison that hangs keeps the earlier ones
        result["rows"].append(row)
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps(result, indent=1) + "\n")

    add(compare(f"import of {imp['model']['source']} (the run's import stage) vs the original HF model",
                imp["outputs"]["model"], hf_dir, batch))
    if export:
        for name, ckpt in export["inputs"].items():
            add(compare(f"student {name}: NeMo checkpoint vs its HF export", ckpt, export["outputs"][name], batch))
    if other_source:
        with tempfile.TemporaryDirectory(dir=run / "work") as tmp:
            ckpt = str(Path(tmp, "model"))
            import_ckpt.import_hf_source(other_source, ckpt, str(Path(tmp, "tokenizer")), te_available())
            add(compare(f"import of {other_source} (same process) vs the original HF model", ckpt, hf_dir, batch))
    return result


def import_compare(hf_dir: str, source: str, work: str, out: str | None = None) -> dict:
    """Import SOURCE into WORK/model (once: an existing checkpoint is reused) and compare its logits with HF_DIR's.
    Run twice, with and without NVIDIA_TF32_OVERRIDE=0, it shows what TF32 GEMMs contribute on the TE path."""
    import os

    import nemo.collections.llm  # noqa: F401 - NeMo's import first, as in the stages

    import_ckpt, _ = _nemo_stages()

    ckpt = Path(work, "model")
    if not ckpt.exists():
        import_ckpt.import_hf_source(source, str(ckpt), str(Path(work, "tokenizer")), te_available())
    batch = tokens(hf_dir, data.pydoc_topics_splits()["validation"])
    result = {"te_available": te_available(), "NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE"),
              "rows": [compare(f"import of {source} vs the original HF model", str(ckpt), hf_dir, batch)]}
    if out:
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--hf-home")
    m.add_argument("--repo-id", default="minitron-test/tiny-llama")
    c = sub.add_parser("check")
    c.add_argument("run_dir")
    c.add_argument("--hf", required=True)
    c.add_argument("--other-source")
    c.add_argument("--out")
    i = sub.add_parser("import-compare")
    i.add_argument("--hf", required=True)
    i.add_argument("--source", required=True)
    i.add_argument("--work", required=True)
    i.add_argument("--out")
    args = parser.parse_args(argv)
    if args.cmd == "make":
        make(args.dir, args.hf_home, args.repo_id)
    elif args.cmd == "import-compare":
        import_compare(args.hf, args.source, args.work, args.out)
    else:
        check(args.run_dir, args.hf, args.other_source, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
