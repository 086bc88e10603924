"""Data stage for real, on the data stage config the launcher renders: pydoc-topics text, a locally trained
BPE, megatron .bin/.idx read back through megatron-core's own dataset classes. No NeMo import."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.stages import data
from tests.rendered import CPU_OVERRIDES, render_run, stage_configs

ROLES = ("train", "validation", "test")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    run = render_run(tmp_path_factory.mktemp("data"))
    assert data.main(["--config", run.layout.stage_config("data")]) == 0
    return stage_configs(run)["data"]


def read_jsonl(path):
    return [json.loads(line)["text"] for line in open(path, encoding="utf-8")]


def test_pydoc_topics_is_split_by_whole_topics():
    splits = data.pydoc_topics_splits()
    titles = {s: {t for t in texts if t.startswith(" = ") and t.endswith(" = ")} for s, texts in splits.items()}
    assert all(len(titles[s]) > 5 for s in ROLES)
    assert not (titles["train"] & titles["validation"]) and not (titles["validation"] & titles["test"])
    assert len(splits["train"]) > 5 * len(splits["validation"])


@settings(max_examples=50, deadline=None)
@given(lines=st.lists(st.text(alphabet="ab\u00e9 ", max_size=30), min_size=1, max_size=40), parts=st.integers(1, 9))
def test_byte_ranges_cover_the_file_on_line_boundaries(tmp_path_factory, lines, parts):
    path = tmp_path_factory.mktemp("ranges") / "f.jsonl"
    blob = "".join(json.dumps({"text": t}) + "\n" for t in lines).encode()
    path.write_bytes(blob)
    ranges = data.byte_ranges(path, parts)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(blob) and len(ranges) <= parts
    assert all(a < b and prev_end == a for (a, b), (_, prev_end) in zip(ranges, [(0, 0)] + ranges[:-1]))
    assert [line for a, b in ranges for line in blob[a:b].splitlines()] == blob.splitlines()


def test_tokenizer_is_trained_and_loads_offline(prepared, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(prepared["tokenizer"]["path_or_id"])
    assert len(tok) == prepared["tokenizer"]["train_bpe_vocab"]
    assert tok.eos_token == data.EOS
    text = "Python's for statement iterates over the items of any sequence."
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_indexed_files_hold_every_document_with_eod(prepared):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(prepared["tokenizer"]["path_or_id"])
    for role in ROLES:
        prefix = prepared["data"]["prefixes"][role]
        texts = read_jsonl(Path(prefix).parent / f"{role}.jsonl")
        expected = [tok.encode(t, add_special_tokens=False) + [tok.eos_token_id] for t in texts]
        ds = IndexedDataset(prefix)
        assert len(ds) == len(texts) > 0
        assert int(ds.sequence_lengths.sum()) == sum(map(len, expected))
        assert ds.index.dtype == np.uint16  # 512-token vocabulary, megatron's optimal dtype
        for i in (0, len(ds) // 2, len(ds) - 1):
            assert ds[i].tolist() == expected[i]
    assert read_jsonl(Path(prepared["data"]["prefixes"]["validation"]).parent / "validation.jsonl") \
        == [t for t in data.pydoc_topics_splits()["validation"]]


def test_gpt_dataset_reads_the_training_split(prepared, tmp_path):
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.megatron_tokenizer import MegatronLegacyTokenizer
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(prepared["tokenizer"]["path_or_id"])

    class Tok(MegatronLegacyTokenizer):
        def tokenize(self, text):
            return hf.encode(text, add_special_tokens=False)

        vocab = property(lambda self: hf.get_vocab())
        inv_vocab = property(lambda self: {v: k for k, v in hf.get_vocab().items()})
        vocab_size = property(lambda self: len(hf))
        eod = property(lambda self: hf.eos_token_id)

    prefix = prepared["data"]["prefixes"]["train"]
    documents = IndexedDataset(prefix)  # keep it alive: items are views into its memory map
    stream = np.concatenate([documents[i] for i in range(len(documents))])
    seq = 64
    one_epoch = (len(stream) - 1) // seq
    config = GPTDatasetConfig(random_seed=1234, sequence_length=seq, blend=([prefix], None), split="1,0,0",
                              tokenizer=Tok(), reset_position_ids=False, reset_attention_mask=False,
                              eod_mask_loss=False, path_to_cache=str(tmp_path), mmap_bin_files=True)
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [one_epoch, None, None], lambda: True, config).build()
    assert len(train) == one_epoch
    haystack = stream.astype(np.uint16).tobytes()
    for i in (0, 7, one_epoch - 1):
        sample = train[i]
        window = np.append(sample["tokens"].numpy(), sample["labels"].numpy()[-1]).astype(np.uint16)
        assert len(sample["tokens"]) == seq
        assert haystack.find(window.tobytes()) % 2 == 0  # a contiguous, token-aligned slice of the split


def test_split_map_and_files_source(prepared, tmp_path):
    """The tutorial's mapping (validation <- test file) through the local-files source."""
    files = {}
    for split, texts in {"train": ["alpha beta"] * 5, "validation": ["val text"], "test": ["test text"]}.items():
        files[split] = str(tmp_path / f"{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    run = render_run(tmp_path, overrides=[
        *CPU_OVERRIDES, f"model.tokenizer={prepared['tokenizer']['path_or_id']}",
        f"data.source={json.dumps({'files': files})}", "data.text_key=body", "data.workers=1",
        'data.split_map={"train": "train", "validation": "test", "test": "validation"}'])
    cfg = stage_configs(run)["data"]
    assert cfg["tokenizer"]["train_bpe_vocab"] is None and "tokenizer" not in cfg["outputs"]
    assert data.main(["--config", run.layout.stage_config("data")]) == 0
    written = Path(cfg["data"]["prefixes"]["validation"]).parent
    assert [json.loads(line)["body"] for line in open(written / "validation.jsonl")] == ["test text"]
    assert [json.loads(line)["body"] for line in open(written / "test.jsonl")] == ["val text"]
