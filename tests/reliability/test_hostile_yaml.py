"""Hostile and careless input at load time (issue 12), in-process so each case is timed alone.

Each case mutates the corpus' good profile or recipe (or adds a `--set`), and must be refused by one
UserError naming the file (or the override), exactly the key it names and, where given, the line,
within a second, in a message of bounded length that never shows a secret. Every mutation is
checked to change the good text, and the good inputs to load, so no case can pass vacuously.
"""

from __future__ import annotations

import os
import tracemalloc

import pytest

from launcher.core.errors import UserError, redact
from launcher.config.profile import load_profile
from launcher.config.recipe import load_recipe, stage_graph
from tests.reliability.conftest import CORPUS

TOKEN = "hf_Zq8xVw3LmN0pRt5sUy7KbC2dEf4GhJ6a"  # fake, shaped like a Hugging Face token
GOOD_PROFILE = (CORPUS / "good" / "profile.yaml").read_text()
GOOD_RECIPE = (CORPUS / "good" / "recipe.yaml").read_text()
# Bounded work, measured as memory rather than time (speed lives in benchmarks/input_gate.py): a
# refusal allocates at most this much, however large or self-multiplying the input.
MAX_REFUSAL_BYTES = 48 * 1024 * 1024
MAX_MESSAGE = 600  # path of the temp file included; the values quoted in it are cut to 60


def _profile_text(tmp_path, text: str) -> str:
    return text.replace("@JOB_DIR@", str(tmp_path / "jobs"))


def _sub(old: str, new: str):
    def mutate(text: str) -> str:
        assert old in text, f"mutation target {old!r} is not in the good file"
        return text.replace(old, new, 1)
    return mutate


def _append(extra: str):
    return lambda text: text + extra


def _replace_key(key: str, line: str):
    """Replace the top-level line of `key` (present in the good file) with `line`."""
    def mutate(text: str) -> str:
        lines = text.splitlines()
        index = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key}:"))
        lines[index] = line
        return "\n".join(lines) + "\n"
    return mutate


def _load(tmp_path, kind: str, mutate=None, overrides=(), raw: bytes | None = None):
    profile = tmp_path / "profile.yaml"
    recipe = tmp_path / "recipe.yaml"
    ptext, rtext = _profile_text(tmp_path, GOOD_PROFILE), GOOD_RECIPE
    if mutate is not None:
        changed = mutate(ptext if kind == "profile" else rtext)
        assert changed != (ptext if kind == "profile" else rtext), "the mutation changed nothing"
        ptext, rtext = (changed, rtext) if kind == "profile" else (ptext, changed)
    profile.write_text(ptext)
    recipe.write_text(rtext)
    if raw is not None:
        (profile if kind == "profile" else recipe).write_bytes(raw)
    try:
        recipe_obj = load_recipe(str(recipe), list(overrides))
        load_profile(str(profile))
    except UserError as exc:
        return exc, (profile if kind == "profile" else recipe)
    return recipe_obj, None


def peak_bytes(call) -> tuple[object, int]:
    """What `call()` returned (or the UserError it raised) and the most memory it held at once (tracemalloc)."""
    tracemalloc.start()
    try:
        try:
            result = call()
        except UserError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _refused(tmp_path, kind, mutate=None, *, key, says, overrides=(), raw=None, line=None, secret=TOKEN):
    error, path = _load(tmp_path, kind, mutate, overrides, raw)
    assert isinstance(error, UserError), f"accepted: {error!r}"
    message = str(error)
    assert key is ... or error.key == key, message
    assert says in message, message
    assert len(message) <= MAX_MESSAGE, len(message)
    assert "\x1b" not in message and "\x07" not in message and "\x00" not in message
    if overrides:  # the override that wrote the key, or the flag itself when the key path is malformed
        assert (error.file or "").startswith("--set") or error.key == "--set", message
    elif path is not None:
        assert error.file == str(path), message
    if line is not None:
        assert error.line == line, message
    if secret:
        assert secret not in message and secret[3:15] not in message, message
    return error


def test_controls_the_good_files_load(tmp_path):
    recipe, _ = _load(tmp_path, "profile")
    assert not isinstance(recipe, UserError), recipe


# -- 1. bytes: control characters, raw or escaped, in keys and values ------------------------------

CONTROL_CASES = [
    ("profile", _replace_key("job_dir", 'job_dir: "/tmp/a\\vb"'), "job_dir", "VT"),
    ("profile", _replace_key("job_dir", 'job_dir: "/tmp/a\\fb"'), "job_dir", "FF"),
    ("profile", _replace_key("job_dir", 'job_dir: "/tmp/a\\0b"'), "job_dir", "NUL"),
    ("profile", _replace_key("job_dir", 'job_dir: "/tmp/a\\rb"'), "job_dir", "CR"),
    ("profile", _replace_key("env_vars", 'env_vars: ["NCCL_DEBUG=WARN\\e]0;pwned\\a"]'), "env_vars[0]", "ESC"),
    ("profile", _replace_key("env_vars", 'env_vars: ["A=1\\r\\nB=2"]'), "env_vars[0]", "CR"),
    ("profile", _replace_key("env_vars", 'env_vars: ["A=x\\u2028y"]'), "env_vars[0]", "LINE SEPARATOR"),
    ("profile", _replace_key("env_vars", 'env_vars: ["A=\\u202egnp.exe"]'), "env_vars[0]", "U+202E"),
    ("profile", _replace_key("env_vars", 'env_vars: ["A=x\\x85y"]'), "env_vars[0]", "NEL"),
    ("profile", _replace_key("env_vars", 'env_vars: ["A=x\\x7fy"]'), "env_vars[0]", "DEL"),
    ("profile", _replace_key("mounts", 'mounts: ["/a\\v:/b"]'), "mounts[0]", "VT"),
    ("profile", _sub("model: H100-80GB", 'model: "H100\\e[2J"'), "gpu.model", "ESC"),
    ("profile", _replace_key("partition", 'partition: "gpu\\b"'), "partition", "BS"),
    ("profile", _sub("{nemo:", '{"ne\\emo":'), "containers", "a key contains the control character ESC"),
    ("profile", _append('"k\\tey": 1\n'), None, "contains a tab"),
    ("profile", _append('setup: ["module load x\\nrm -rf ~"]\n'), "setup[0]", "newline"),
    ("recipe", _sub("name: bad-recipe", 'name: "bad\\x1b]2;title\\x07"'), "name", "ESC"),
    ("recipe", _sub("source: random", 'source: "/ckpt\\0"'), "model.source", "NUL"),
    ("recipe", _append('description: "ok\\vnot ok"\n'), "description", "VT"),
    ("recipe", _sub("finetune: {steps: 10,", 'finetune: {partition: "a\\x9bb", steps: 10,'),
     "stages.finetune.partition", "U+009B"),
    ("recipe", _append('after: {"report\\e": [data]}\n'), "after", "ESC"),
]


@pytest.mark.parametrize("kind, mutate, key, says", CONTROL_CASES)
def test_control_characters_are_refused_naming_the_key(tmp_path, kind, mutate, key, says):
    _refused(tmp_path, kind, mutate, key=key, says=says)


@pytest.mark.parametrize("byte, name", [(b"\x1b", "ESC"), (b"\x07", "BEL"), (b"\x00", "NUL"), (b"\x0b", "VT"),
                                        (b"\x0c", "FF"), (b"\x08", "BS"), (b"\x7f", "DEL"),
                                        ("\u2028".encode(), "LINE SEPARATOR"), ("\u202e".encode(), "U+202E")])
def test_raw_control_bytes_in_the_file_name_file_line_and_key(tmp_path, byte, name):
    text = _profile_text(tmp_path, GOOD_PROFILE).encode().replace(b"model: H100-80GB", b"model: H100" + byte + b"x")
    error = _refused(tmp_path, "profile", raw=text, key="gpu.model", says=name, line=4)
    assert "written raw" in str(error)


def test_raw_escape_where_yaml_cannot_parse_still_names_the_line(tmp_path):
    text = _profile_text(tmp_path, GOOD_PROFILE).encode() + b"\x1b[31m: [\n"
    _refused(tmp_path, "profile", raw=text, key=None, says="ESC", line=14)


def test_tab_and_newline_stay_allowed_in_free_text(tmp_path):
    recipe, _ = _load(tmp_path, "recipe", _append('description: "two\\tcolumns\\nand two lines"\n'))
    assert recipe.description == "two\tcolumns\nand two lines"


@pytest.mark.parametrize("override, key, says", [
    ("name=a\vb", "name", "VT"), ("name=a\x1bb", "name", "ESC"), ("name=a\nb", "name", "newline"),
    ("data.text_key=t\x00", "data.text_key", "NUL"), ("na\x1bme=x", "--set", "not a key path"),
])
def test_control_characters_in_overrides(tmp_path, override, key, says):
    _refused(tmp_path, "recipe", overrides=[override], key=key, says=says)


# -- 2. sizes ------------------------------------------------------------------------------------

SIZE_CASES = [
    ("profile", _replace_key("env_vars", f"env_vars: [BIG={'x' * 40000}]"), "env_vars[0]", "at most 32768"),
    ("profile", _replace_key("env_vars", "env_vars: [" + ", ".join(f"V{i}={'x' * 30000}" for i in range(5)) + "]"),
     "env_vars[4]", "KiB in all"),
    ("profile", _replace_key("env_vars", "env_vars: [" + ", ".join(f"V{i}" for i in range(300)) + "]"),
     "env_vars", "at most 256"),
    ("profile", _replace_key("job_dir", f"job_dir: /tmp/{'d' * 4000}"), "job_dir", "at most 1024"),
    ("profile", _replace_key("job_dir", "job_dir: /tmp/" + "/".join(["d" * 200] * 4)), "job_dir", "at most 512"),
    ("profile", _replace_key("job_dir", f"job_dir: /tmp/{'d' * 300}/x"), "job_dir", "longer than 255"),
    ("profile", _replace_key("mounts", "mounts: [" + ", ".join(f"/m{i}:/m{i}" for i in range(100)) + "]"),
     "mounts", "at most 64"),
    ("profile", _sub("model: H100-80GB", f"model: {'H' * 2000}"), "gpu.model", "at most 1024"),
    ("profile", _append("sbatch_args: [" + ", ".join(["--exclusive"] * 100) + "]\n"), "sbatch_args", "at most 64"),
    ("profile", _append(f"{'k' * 200}: 1\n"), None, "keys are at most 128"),
    ("recipe", _append(f"description: {'d' * 5000}\n"), "description", "at most 4096"),
    ("recipe", _sub("students: [depth, width]", "students: [" + ", ".join(["depth"] * 20) + "]"),
     "students", "at most 16"),
    ("recipe", _sub("drop_layers: [3, 4]", "drop_layers: [" + ", ".join(["3"] * 2000) + "]"),
     "pruning.depth.drop_layers", "at most 1024"),
]


@pytest.mark.parametrize("kind, mutate, key, says", SIZE_CASES)
def test_sizes_are_bounded(tmp_path, kind, mutate, key, says):
    _refused(tmp_path, kind, mutate, key=key, says=says)


# -- 3. bounded work: file size, alias expansion, nesting, numeric ranges --------------------------

def test_a_50_mb_profile_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    error, peak = peak_bytes(lambda: load_profile(str(path)))
    assert isinstance(error, UserError) and peak < 4 * 1024 * 1024, peak  # a 50 MB read would show
    assert "larger than 1024 KiB" in str(error) and len(str(error)) < 200


def _laughs(levels: int, fanout: int) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fanout) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


BOMBS = {
    "billion-laughs": _laughs(9, 10),
    "wide-laughs": _laughs(3, 400),
    "merge-laughs": "b0: &b0 {x: 1}\n" + "".join(
        f"b{i}: &b{i} {{<<: [{', '.join([f'*b{i - 1}'] * 10)}], y{i}: 1}}\n" for i in range(1, 10)),
    "recursive-alias": "a: &a [*a, *a]\n",
    "recursive-merge": "a: &a {<<: *a, x: 1}\n",
    "deep-flow": "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep-block": "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n",
    "many-values": "a: [" + ", ".join(["1"] * 300_000) + "]\n",
    "many-keys": "".join(f"k{i}: {i}\n" for i in range(60_000)),
    "long-line": "a: " + "x" * 1_000_000 + "\n",
}


@pytest.mark.parametrize("name", BOMBS)
def test_resource_bombs_are_refused_fast(tmp_path, name):
    text = BOMBS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    error, peak = peak_bytes(lambda: load_recipe(str(path)))
    assert isinstance(error, UserError), f"{name} accepted"
    assert peak < MAX_REFUSAL_BYTES, f"{name}: {peak / 2 ** 20:.0f} MiB held while refusing it"
    assert len(str(error)) <= MAX_MESSAGE


def test_laughs_in_an_override_are_refused_fast(tmp_path):
    value = "[" + ", ".join(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" if i else "&a0 [x]"
                            for i in range(9)) + "]"
    error = _refused(tmp_path, "recipe", overrides=[f"students={value}"], key=..., says="more than 20000")
    assert error.file.startswith("--set students=")


RANGE_CASES = [
    ("recipe", "model.num_layers=1e12", "model.num_layers", "at most 1024"),
    ("recipe", "model.hidden_size=1e9", "model.hidden_size", "at most"),
    ("recipe", "model.ffn_hidden_size=1e9", "model.ffn_hidden_size", "at most"),
    ("recipe", "model.num_attention_heads=100000", "model.num_attention_heads", "at most 1024"),
    ("recipe", "model.vocab_size=1e12", "model.vocab_size", "at most"),
    ("recipe", "data.seq_length=1e12", "data.seq_length", "at most"),
    ("recipe", "stages.finetune.steps=1e12", "stages.finetune.steps", "at most 1e+07"),
    ("recipe", "stages.distill.tokens=1e20", "stages.distill.tokens", "at most"),
    ("recipe", "stages.distill.tokens=1e14", "stages.distill.tokens", "more than 10000000 steps"),
    ("recipe", "stages.finetune.micro_batch_size=1e6", "stages.finetune.micro_batch_size", "at most"),
    ("recipe", "stages.finetune.global_batch_size=1e9", "stages.finetune.global_batch_size", "at most"),
    ("recipe", "stages.finetune.nodes=1e9", "stages.finetune.nodes", "at most"),
    ("recipe", "stages.finetune.gpus_per_node=1000", "stages.finetune.gpus_per_node", "at most 64"),
    ("recipe", "stages.finetune.tp=1000", "stages.finetune.tp", "at most 64"),
    ("recipe", "stages.finetune.pp=1e6", "stages.finetune.pp", "at most"),
    ("recipe", "stages.finetune.lr=5", "stages.finetune.lr", "at most 1"),
    ("recipe", "stages.finetune.seed=-1", "stages.finetune.seed", "at least 0"),
    ("recipe", "stages.prune.num_train_samples=1e12", "stages.prune.num_train_samples", "at most"),
    ("recipe", "stages.finetune.time='0'", "stages.finetune.time", "between 1 minute and 365 days"),
    ("recipe", "stages.finetune.time=99999-00:00:00", "stages.finetune.time", "between 1 minute"),
    ("recipe", "pruning.width.target_hidden_size=1e12", "pruning.width.target_hidden_size", "at most"),
    ("recipe", "scaling.reference_gpus=1e12", "scaling.reference_gpus", "at most"),
]


@pytest.mark.parametrize("kind, override, key, says", RANGE_CASES)
def test_every_count_and_size_has_a_range(tmp_path, kind, override, key, says):
    _refused(tmp_path, kind, overrides=[override], key=key, says=says)


PROFILE_RANGES = [
    (_replace_key("nodes", "nodes: 1e9"), "nodes", "at most"),
    (_replace_key("gpus_per_node", "gpus_per_node: 1000"), "gpus_per_node", "at most 64"),
    (_append("cpus_per_node: 1000000\n"), "cpus_per_node", "at most"),
    (_append("signal_lead_s: 1e9\n"), "signal_lead_s", "at most"),
    (_append("max_continuations: 1e9\n"), "max_continuations", "at most"),
    (_append("master_port: 1e9\n"), "master_port", "at most 64535"),
    (_sub("memory_gib: 80", "memory_gib: 1e12"), "gpu.memory_gib", "at most 300"),
    (_sub("{model: H100-80GB,", "{achievable_tflops: 1e12, model: H100-80GB,"), "gpu.achievable_tflops", "at most"),
    (_replace_key("default_time", 'default_time: "0"'), "default_time", "between 1 minute"),
    (_sub('gpu: "04:00:00"', 'gpu: "0"'), "timeouts", "between 1 minute"),
]


@pytest.mark.parametrize("mutate, key, says", PROFILE_RANGES)
def test_every_profile_count_has_a_range(tmp_path, mutate, key, says):
    _refused(tmp_path, "profile", mutate, key=key, says=says)


# -- 4. secrets in the wrong shape are refused without being shown --------------------------------

SECRET_CASES = [
    (_replace_key("env_vars", f"env_vars:\n  - HF_TOKEN: {TOKEN}"), "env_vars[0]", "write `- HF_TOKEN`"),
    (_replace_key("env_vars", f"env_vars: [{{WANDB_API_KEY: {TOKEN}}}]"), "env_vars[0]", "WANDB_API_KEY"),
    (_replace_key("env_vars", f"env_vars: [{{SOME_VAR: {TOKEN}}}]"), "env_vars[0]", "`- SOME_VAR=VALUE`"),
    (_replace_key("env_vars", f"env_vars: {{HF_TOKEN: {TOKEN}}}"), "env_vars", "expected a list"),
    (_append(f"required_env_vars: [HF_TOKEN={TOKEN}]\n"), "required_env_vars[0]", "write `- HF_TOKEN`"),
    (_append(f"required_env_vars: ['{TOKEN}']\n"), "required_env_vars[0]", "not a valid"),
    (_append(f"required_env_vars: [{{HF_TOKEN: {TOKEN}}}]\n"), "required_env_vars[0]", "value not shown"),
    (_replace_key("env_vars", f"env_vars: [HF_TOKEN={TOKEN}]"), "env_vars[0]", "looks like a secret"),
    (_replace_key("env_vars", f"env_vars: [MY_PASSWORD={TOKEN}]"), "env_vars[0]", "looks like a secret"),
    (_replace_key("env_vars", f"env_vars: [NGC_API_KEY={TOKEN}]"), "env_vars[0]", "looks like a secret"),
    (_replace_key("env_vars", f"env_vars: [HUGGING={TOKEN}]"), "env_vars[0]", "looks like a secret token"),
    (_replace_key("env_vars", f"env_vars: ['{TOKEN}']"), "env_vars[0]", "not a valid"),
    (_replace_key("env_vars", f"env_vars: ['HF TOKEN={TOKEN}']"), "env_vars[0]", "not a valid"),
    (_append(f"{TOKEN}: 1\n"), None, "looks like a secret token"),
    (_replace_key("partition", f"partition: 'gpu {TOKEN}'"), "partition", "Slurm directives"),
    (_sub('"nvcr.io/nvidia/nemo:26.02"', f'"nvcr.io/nvidia/nemo {TOKEN}"'), "containers.nemo", "malformed image"),
    (_replace_key("job_dir", f"job_dir: {TOKEN}"), "job_dir", "absolute path"),
    (_replace_key("nodes", f"nodes: {TOKEN}"), "nodes", "expected an integer"),
]


@pytest.mark.parametrize("mutate, key, says", SECRET_CASES)
def test_secrets_in_the_wrong_shape_are_refused_and_never_shown(tmp_path, mutate, key, says):
    _refused(tmp_path, "profile", mutate, key=key, says=says)


@pytest.mark.parametrize("override, key", [
    (f"model.num_layers={TOKEN}", "model.num_layers"), (f"students=[{TOKEN}]", "students[0]"),
    (f"stages.finetune.precision={TOKEN}", "stages.finetune.precision"), (f"name={TOKEN}/x", "name"),
])
def test_secrets_in_overrides_are_never_shown(tmp_path, override, key):
    error = _refused(tmp_path, "recipe", overrides=[override], key=key, says="", secret=None)
    assert TOKEN not in error.message and TOKEN not in (error.hint or "")


@pytest.mark.parametrize("text, shown", [
    ("HF_TOKEN=hunter2", "HF_TOKEN=<redacted>"), ("token: hunter2", "token: <redacted>"),
    ("MY_SECRETS: hunter2", "MY_SECRETS: <redacted>"), ("GITHUB_TOKEN_2=hunter2", "GITHUB_TOKEN_2=<redacted>"),
    ("api_key: 'hunter2'", "api_key: '<redacted>'"),
    # a word that only starts like a secret name is no assignment: a recipe's key and its error stay readable
    ("model.tokenizer: expected a string, got int 12", "model.tokenizer: expected a string, got int 12"),
    ("  tokenizer: bpe:512", "  tokenizer: bpe:512"),
])
def test_secret_assignments_are_redacted_and_nothing_else(text, shown):
    assert redact(text) == shown


# -- 5. semantics ----------------------------------------------------------------------------------

@pytest.mark.parametrize("port, ok", [(1023, False), (1024, True), (29500, True), (64535, True), (64536, False),
                                      (65000, False), (65535, False)])
def test_master_port_leaves_room_for_the_job_id_offset(tmp_path, port, ok):
    result, _ = _load(tmp_path, "profile", _append(f"master_port: {port}\n"))
    assert isinstance(result, UserError) != ok, result
    if not ok:
        assert result.key == "master_port"


@pytest.mark.parametrize("destination", ["@JOB_DIR@", "@JOB_DIR@/", "@PARENT@", "/", "@JOB_DIR@/runs",
                                         "@PARENT@/./"])
def test_a_mount_that_hides_job_dir_is_refused(tmp_path, destination):
    (tmp_path / "src").mkdir()
    dst = destination.replace("@JOB_DIR@", str(tmp_path / "jobs")).replace("@PARENT@", str(tmp_path))
    _refused(tmp_path, "profile", _replace_key("mounts", f"mounts: ['{tmp_path}/src:{dst}']"),
             key="mounts[0]", says="would hide job_dir")


def test_a_mount_beside_job_dir_is_fine(tmp_path):
    result, _ = _load(tmp_path, "profile", _replace_key("mounts", f"mounts: ['/data:{tmp_path}/jobs-data']"))
    assert not isinstance(result, UserError), result


@pytest.mark.parametrize("kind", ["data", "import", "finetune", "prune", "distill"])
def test_stages_that_cannot_be_skipped_refuse_enabled_false(tmp_path, kind):
    _refused(tmp_path, "recipe", overrides=[f"stages.{kind}.enabled=false"], key=f"stages.{kind}.enabled",
             says="cannot be disabled")


def test_report_and_export_honour_enabled(tmp_path):
    recipe, _ = _load(tmp_path, "recipe", overrides=["stages.report.enabled=false",
                                                         "stages.export.enabled=true"])
    names = [node.name for node in stage_graph(recipe)]
    assert "report" not in names and "export" in names


@pytest.mark.parametrize("override", [".=5", "=5", "a..b=1", "a.=1", ".a=1", "name.=x", "[0]=1", "a[x]=1",
                                      "a b=1", "students[]=x", "stages..finetune.steps=3"])
def test_empty_or_malformed_override_paths_are_refused(tmp_path, override):
    error = _refused(tmp_path, "recipe", overrides=[override], key="--set", says="")
    assert "KEY=VALUE" in str(error) or "not a key path" in str(error)


def test_merge_keys_are_supported_and_the_override_wins(tmp_path):
    mutate = _sub("stages:\n  finetune: {steps: 10, micro_batch_size: 4, global_batch_size: 32}\n"
                  "  distill: {steps: 10, micro_batch_size: 4, global_batch_size: 32}",
                  "stages:\n  finetune: &train {steps: 10, micro_batch_size: 4, global_batch_size: 32}\n"
                  "  distill:\n    <<: *train\n    steps: 20")
    recipe, _ = _load(tmp_path, "recipe", mutate)
    assert not isinstance(recipe, UserError), recipe
    assert recipe.stages["distill"].steps == 20 and recipe.stages["distill"].global_batch_size == 32


def test_merge_of_a_list_the_first_mapping_wins(tmp_path):
    from launcher.config.yamlfile import load_yaml_text

    data = load_yaml_text("a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc: {<<: [*a, *b], z: 3}\n", "f").data
    assert data["c"] == {"x": 1, "y": 2, "z": 3}


def test_a_key_written_twice_beside_a_merge_is_still_a_duplicate(tmp_path):
    mutate = _sub("distill: {steps: 10,", "distill: {<<: {steps: 5}, steps: 10, steps: 11,")
    _refused(tmp_path, "recipe", mutate, key="stages.distill.steps", says="duplicate key", line=16)


@pytest.mark.parametrize("value, ok, says", [
    ("81559", False, "that looks like MiB"), ("143771", False, "that looks like MiB"), ("4", False, "at least 8"),
    ("301", False, "at most 300"), ("8", True, ""), ("139", True, ""), ("288", True, ""),
])
def test_gpu_memory_is_in_the_range_of_real_cards(tmp_path, value, ok, says):
    """The range any card may have: a GPU the planner does not know (given its throughput) has no size to match."""
    gpu = f"{{model: test-gpu, achievable_tflops: 400, memory_gib: {value}}}"
    result, _ = _load(tmp_path, "profile", _sub("{model: H100-80GB, memory_gib: 80}", gpu))
    assert isinstance(result, UserError) != ok, result
    if not ok:
        assert result.key == "gpu.memory_gib" and says in str(result), result


@pytest.mark.parametrize("text, key", [("cpus_per_node: 0112\n", "cpus_per_node"),
                                       ("master_port: 029500\n", "master_port"),
                                       ("cpus_per_node: -012\n", "cpus_per_node"),
                                       ("cpus_per_node: 0_112\n", "cpus_per_node"),
                                       ("cpus_per_node: 1:52\n", "cpus_per_node")])
def test_leading_zero_and_base_60_integers_are_refused_with_a_hint(tmp_path, text, key):
    error = _refused(tmp_path, "profile", _append(text), key=key, says="")
    assert "YAML 1.1 reads" in str(error) and "quote" in error.hint


def test_leading_zero_in_an_override_is_refused(tmp_path):
    _refused(tmp_path, "recipe", overrides=["data.workers=012"], key="data.workers", says="octal")


@pytest.mark.parametrize("text, value", [("cpus_per_node: 0\n", 0), ("cpus_per_node: 112\n", 112),
                                         ('mem_per_node: "0112"\n', "0112")])
def test_plain_and_quoted_numbers_still_load(tmp_path, text, value):
    result, _ = _load(tmp_path, "profile", _append(text))
    assert not isinstance(result, UserError), result
    profile = load_profile(str(tmp_path / "profile.yaml"))
    assert getattr(profile, text.split(":")[0]) == value


# -- 6. the bundled profiles keep runs out of shared directories ----------------------------------

def test_no_bundled_profile_puts_runs_in_a_shared_world_writable_place():
    from launcher.config.profile import PROFILE_DIR

    for name in sorted(os.listdir(PROFILE_DIR)):
        profile = load_profile(os.path.join(PROFILE_DIR, name))
        parts = os.path.normpath(profile.job_dir).split(os.sep)
        assert parts[1] not in ("tmp", "var", "dev") and "/dev/shm" not in profile.job_dir, (name, profile.job_dir)
