"""Data stage: source text -> one jsonl per role -> Megatron indexed .bin/.idx (EOD appended).

Source: an HF dataset (`datasets.load_dataset`, honouring HF_HOME / HF_HUB_OFFLINE), local
jsonl/parquet files, or `pydoc-topics` (Python's own documentation text, laid out like WikiText).
`data.split_map` says which source split feeds each role; the trainers read the roles.
Optionally trains a byte-level BPE tokenizer on the train role first (`tokenizer.train_bpe_vocab`).
Tokenizing runs in `data.workers` processes over byte ranges of the jsonl, each writing a part with
megatron-core's IndexedDatasetBuilder; the parts are merged with the same builder's `add_index`,
as megatron's own preprocess_data.py does with partitions.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Iterator

from jobs.contract import DATA_ROLES, StageConfig
from jobs.runtime.frame import run_stage

log = logging.getLogger("jobs")

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"


def pydoc_topics_splits() -> dict[str, list[str]]:
    """`pydoc_data.topics` as WikiText-like records (a ` = Title = ` line, then one record per
    paragraph); every tenth topic goes to validation and the next to test, whole topics per split."""
    from pydoc_data.topics import topics

    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for i, name in enumerate(sorted(topics)):
        split = "validation" if i % 10 == 8 else "test" if i % 10 == 9 else "train"
        splits[split].append(f" = {name} = ")
        splits[split].extend(p.strip() for p in topics[name].split("\n\n") if p.strip())
    return splits


def load_source(source: dict, text_key: str):
    """A `datasets.DatasetDict` keyed by source split name."""
    import datasets

    if "builtin" in source:
        if source["builtin"] != "pydoc-topics":
            raise ValueError(f"unknown builtin corpus {source['builtin']!r}")
        return datasets.DatasetDict(
            {split: datasets.Dataset.from_dict({text_key: texts}) for split, texts in pydoc_topics_splits().items()}
        )
    if "files" in source:
        files = source["files"]
        fmt = "parquet" if all(p.endswith(".parquet") for p in files.values()) else "json"
        return datasets.load_dataset(fmt, data_files=files)
    return datasets.load_dataset(source["hf_dataset"], source.get("hf_config"))


def write_jsonl(dataset, text_key: str, path: Path) -> int:
    """One `{text_key: text}` per line, skipping blank records (they would be documents of EOD only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for text in dataset[text_key]:
            if text and text.strip():
                f.write(json.dumps({text_key: text}, ensure_ascii=False) + "\n")
                count += 1
    return count


def iter_texts(path: Path, text_key: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)[text_key]


def train_bpe(train_jsonl: Path, text_key: str, vocab_size: int, out_dir: str) -> None:
    """Byte-level BPE with HF `tokenizers`, saved as a transformers tokenizer dir (NeMo's AutoTokenizer
    and HF export load it offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(iter_texts(train_jsonl, text_key), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    fast.save_pretrained(out_dir)
    log.info("trained byte-level BPE tokenizer, vocab %d, saved to %s", len(fast), out_dir)


def byte_ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """Split a file into up to `parts` byte ranges that start and end on line boundaries."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        for i in range(1, parts):
            f.seek(max(size * i // parts, cuts[-1]))
            f.readline()
            cuts.append(min(f.tell(), size))
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def _encode_part(job: tuple) -> tuple[str, int, int]:
    """Worker: tokenize one byte range of the jsonl into a partial .bin/.idx. Returns (prefix, docs, tokens)."""
    jsonl, start, end, text_key, tokenizer, append_eod, part_prefix = job
    import numpy as np
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    builder = IndexedDatasetBuilder(f"{part_prefix}.bin", dtype=DType.optimal_dtype(len(tok)))
    docs = tokens = 0
    with open(jsonl, "rb") as f:
        f.seek(start)
        batch: list[str] = []
        while True:
            line = f.readline() if f.tell() < end else b""
            if line:
                batch.append(json.loads(line)[text_key])
            if batch and (not line or len(batch) == 1024):
                for ids in tok(batch, add_special_tokens=False)["input_ids"]:
                    if append_eod:
                        ids.append(tok.eos_token_id)
                    builder.add_document(np.asarray(ids), [len(ids)])
                    docs, tokens = docs + 1, tokens + len(ids)
                batch = []
            if not line:
                break
    builder.finalize(f"{part_prefix}.idx")
    return part_prefix, docs, tokens


def build_indexed(jsonl: Path, prefix: str, text_key: str, tokenizer: str, append_eod: bool,
                  workers: int) -> tuple[int, int]:
    """jsonl -> `<prefix>.bin/.idx` with several workers; returns (documents, tokens)."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from transformers import AutoTokenizer

    ranges = byte_ranges(jsonl, max(1, workers))
    jobs = [(str(jsonl), a, b, text_key, tokenizer, append_eod, f"{prefix}.part{i:03d}")
            for i, (a, b) in enumerate(ranges)]
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        parts = pool.map(_encode_part, jobs)
    vocab = len(AutoTokenizer.from_pretrained(tokenizer))
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=DType.optimal_dtype(vocab))
    for part_prefix, _, _ in parts:
        builder.add_index(part_prefix)
    builder.finalize(f"{prefix}.idx")
    for part_prefix, _, _ in parts:
        os.remove(f"{part_prefix}.bin")
        os.remove(f"{part_prefix}.idx")
    return sum(p[1] for p in parts), sum(p[2] for p in parts)


def run(cfg: StageConfig) -> None:
    data, tok = cfg.data, cfg.tokenizer
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    source = load_source(data["source"], data["text_key"])
    jsonls = {}
    for role in DATA_ROLES:
        split = data["split_map"][role]
        if split not in source:
            raise ValueError(f"source has no split {split!r} for role {role} (has {sorted(source)})")
        jsonls[role] = Path(data["prefixes"][role]).parent / f"{role}.jsonl"
        count = write_jsonl(source[split], data["text_key"], jsonls[role])
        log.info("%s <- source split %s: %d records -> %s", role, split, count, jsonls[role])
    if tok["train_bpe_vocab"]:
        train_bpe(jsonls["train"], data["text_key"], tok["train_bpe_vocab"], tok["path_or_id"])
    for role in DATA_ROLES:
        docs, tokens = build_indexed(jsonls[role], data["prefixes"][role], data["text_key"], tok["path_or_id"],
                                     data["append_eod"], data["workers"])
        log.info("%s: %d documents, %d tokens -> %s.{bin,idx}", role, docs, tokens, data["prefixes"][role])


def main(argv=None) -> int:
    return run_stage("data", run, argv)


if __name__ == "__main__":
    sys.exit(main())
