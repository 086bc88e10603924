"""What the user and the cluster say bounds the plan (issue 23 item 5): `--nodes` / `max_nodes` cap every
stage's nodes, stages that gain nothing from nodes take fewer, each stage's time limit is its estimate with a
margin within its partition's MaxTime, and pruning spans nodes where one node cannot hold its pipeline."""

import json
import math
import subprocess

import pytest

from jobs.contract import RunLayout
from jobs.contract.config import validate
from launcher.backends import executor_for
from launcher.backends.slurm_preflight import check_cluster_offers
from launcher.config.profile import cap_nodes, load_profile, profile_from_located
from launcher.planning import memory as mm
from launcher.config.recipe import load_recipe
from launcher.config.values import parse_time_minutes
from launcher.config.yamlfile import Located
from launcher.core.errors import UserError
from launcher.planning import timemodel as tm
from launcher.planning.planner import make_plan
from launcher.rendering.stageconfig import build_stage_config
from tests.conftest import run_cli, write_profile


@pytest.fixture(autouse=True)
def _no_calibration(minitron_home):
    """Plans here come from the model alone, whatever the user's $MINITRON_HOME holds."""


def profile_of(nodes, gpus, memory, **more):
    """GPUs of any memory size: a model the planner does not know, at an H100's throughput."""
    gpu = {"model": "test-gpu", "memory_gib": memory, "achievable_tflops": mm.achievable_tflops("H100", None)}
    data = {"executor": "slurm", "nodes": nodes, "gpus_per_node": gpus, "gpu": gpu,
            "partition": "gpu", "cpu_partition": "cpu", "job_dir": "/shared/runs", "container": "none", **more}
    return profile_from_located(Located(data=data, file="generated.yaml"), "generated.yaml")


def capped(name, nodes):
    profile = load_profile(name)
    cap_nodes(profile, nodes)
    return profile


# -- a: --nodes and max_nodes ----------------------------------------------------------------------
def test_nodes_caps_every_stage_and_says_so():
    plan = make_plan(capped("h100-4x8", 2), load_recipe())
    assert max(s.nodes for s in plan.stages) == 2
    for name in ("finetune", "distill_depth", "distill_width"):  # 4 of 4 nodes uncapped (test_planner)
        assert plan.stage(name).nodes == 2
        assert "at most 2 of the profile's 4 nodes" in plan.stage(name).why


def test_max_nodes_in_the_profile_caps_as_nodes_does():
    by_key = make_plan(profile_of(4, 8, 80, max_nodes=2), load_recipe())
    profile = profile_of(4, 8, 80)
    cap_nodes(profile, 2)
    by_flag = make_plan(profile, load_recipe())
    assert [(s.name, s.nodes, s.gpus_per_node) for s in by_key.stages] == \
        [(s.name, s.nodes, s.gpus_per_node) for s in by_flag.stages]
    assert by_key.stage("finetune").nodes == 2


def test_nodes_above_the_profile_or_under_a_stage_setting_are_refused():
    profile = load_profile("h100-4x8")
    with pytest.raises(UserError) as info:
        cap_nodes(profile, 5)
    assert info.value.key == "--nodes" and "h100-4x8.yaml" in str(info.value)
    with pytest.raises(UserError) as info:
        make_plan(capped("h100-4x8", 2), load_recipe(None, ["stages.finetune.nodes=3"]))
    assert info.value.key == "stages.finetune.nodes" and "cap of 2" in str(info.value)


def test_dry_run_with_nodes_records_the_cap_and_asks_slurm_for_it(tmp_path):
    profile = write_profile(tmp_path / "four.yaml", nodes=4, timeouts={"batch": "04:00:00", "cpu": "04:00:00"})
    proc = run_cli("submit", "--dry-run", "--json", "--profile", profile, "--nodes", "2",
                   env={"MINITRON_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "max_nodes: 2" in (tmp_path / out["run_dir"] / "profile.yaml").read_text()
    assert json.loads((tmp_path / out["run_dir"] / "inputs.json").read_text())["nodes"] == 2
    finetune = open(out["scripts"]["finetune"]).read()
    assert "#SBATCH --nodes=2\n" in finetune and "    --nodes=2 " in finetune


# -- b: stages that gain nothing from more nodes take fewer ---------------------------------------
def test_stages_take_only_the_nodes_they_use_and_say_why():
    plan = make_plan(capped("h100-4x8", 3), load_recipe())
    # 3 nodes × 8 GPUs: no TP·PP·DP of 24 GPUs splits GBS 128, so training takes 2 of the 3 it may
    for name in ("finetune", "distill_depth", "distill_width"):
        s = plan.stage(name)
        assert s.nodes == 2 and s.global_batch_size % (s.micro_batch_size * s.dp) == 0
        assert "on 2 of 3 nodes" in s.why and "at most 3 of the profile's 4 nodes" in s.why
    assert (plan.stage("import").nodes, plan.stage("import").gpus_per_node) == (1, 1)
    assert "one GPU" in plan.stage("import").why
    assert plan.stage("prune_width").nodes == 1 and "one node holds its pipeline" in plan.stage("prune_width").why
    assert plan.stage("report").nodes == 1 and "one node" in plan.stage("report").why


# -- c: time limits --------------------------------------------------------------------------------
def planned_minutes(s, lead):
    """The stated rule, worked out here: estimate × 1.5 + 10 min (+ the signal lead), up to 5 minutes."""
    return math.ceil((s.est_hours * 60 * 1.5 + 10 + lead / 60) / 5) * 5


def test_limit_is_the_estimate_with_its_margin_unless_the_recipe_gives_one():
    profile = load_profile("h100-1x8")
    plan = make_plan(profile, load_recipe())
    for s in plan.stages:
        if s.kind in ("data", "import"):  # the recipe's own limits: downloads the time model does not count
            assert s.time_limit_source == f"stages.{s.kind}.time" and f"limit: stages.{s.kind}.time" in s.why
            continue
        lead = profile.signal_lead_s if s.requeue else 0
        assert s.time_limit_source == "estimate" and "limit: estimate ×1.5 + 10 min" in s.why, s.why
        assert parse_time_minutes(s.time_limit) == planned_minutes(s, lead), s.name
        assert parse_time_minutes(s.time_limit) * 60 >= s.est_hours * 3600 * tm.LIMIT_MARGIN + lead
    assert plan.stage("finetune").time_limit == "00:45:00"  # 19 min estimated, was default_time's 04:00:00
    given = make_plan(profile, load_recipe(None, ["stages.finetune.time=02:00:00"])).stage("finetune")
    assert (given.time_limit, given.time_limit_source) == ("02:00:00", "stages.finetune.time")


def test_limit_is_capped_at_the_partition_maxtime_and_training_continues_past_it():
    profile = load_profile("h100-1x8")
    profile.timeouts["batch"] = "00:15:00"
    plan = make_plan(profile, load_recipe(None, ["stages.import.time=00:15:00"]))
    ft = plan.stage("finetune")
    assert (ft.time_limit, ft.time_limit_source) == ("00:15:00", "timeouts.batch")
    runs = tm.attempts(ft.est_hours * 3600, ft.est_startup_s, 15 * 60, profile.signal_lead_s)
    assert runs > 1 and f"~{runs - 1} continuation(s) past the 00:15:00 limit" in ft.why
    report = plan.stage("report")  # 6 min estimated: under the cap, which still bounds its planned 20 min
    assert (report.time_limit, report.time_limit_source) == ("00:15:00", "timeouts.batch")
    assert plan.stage("data").time_limit == "02:00:00"  # the cpu partition's own limit is 04:00:00


def test_a_partition_without_maxtime_caps_at_default_time():
    profile = profile_of(1, 8, 80, default_time="00:20:00")
    s = make_plan(profile, load_recipe()).stage("prune_width")  # 9 min estimated: 25 min planned
    assert s.time_limit_source == "default_time" and s.time_limit == "00:20:00"


def test_training_beyond_its_continuations_is_refused_with_the_fix():
    profile = load_profile("h100-1x8")
    recipe = load_recipe(None, ["stages.finetune.steps=12000"])  # ~125 h at 4 h a run: 33 runs, 11 allowed
    with pytest.raises(UserError) as info:
        make_plan(profile, recipe)
    assert info.value.key == "stages.finetune" and "max_continuations=10 allows" in str(info.value)
    assert "raise max_continuations" in str(info.value)
    profile.max_continuations = 40
    ft = make_plan(profile, recipe).stage("finetune")
    runs = tm.attempts(ft.est_hours * 3600, ft.est_startup_s, 240 * 60, profile.signal_lead_s)
    assert 11 < runs <= 41 and f"~{runs - 1} continuation(s)" in ft.why


def test_a_stage_that_cannot_continue_must_fit_its_cap():
    recipe = load_recipe(None, ["stages.prune.num_train_samples=200000"])
    with pytest.raises(UserError) as info:
        make_plan(load_profile("h100-1x8"), recipe)
    assert info.value.key == "stages.prune" and "only training stages continue" in str(info.value)
    within = make_plan(load_profile("h100-1x8"), load_recipe(None, ["stages.prune.num_train_samples=200000",
                                                                    "stages.prune.time=04:00:00"]))
    assert "WARNING: estimate" in within.stage("prune_width").why  # the recipe's own limit is the user's call


def test_a_recipe_limit_above_maxtime_is_refused_with_the_fix():
    with pytest.raises(UserError) as info:
        make_plan(load_profile("h100-1x8"), load_recipe(None, ["stages.report.time=05:00:00"]))
    assert info.value.key == "stages.report.time" and "leave time out" in str(info.value)


def test_the_local_executor_neither_caps_nor_refuses_limits_it_does_not_enforce():
    s = make_plan(load_profile("local"), load_recipe("tiny", ["stages.finetune.steps=9000000"])).stage("finetune")
    assert s.time_limit_source == "stages.finetune.time"
    s = make_plan(load_profile("local"), load_recipe("tiny", ["stages.prune.num_train_samples=9000000"])).stage(
        "prune_width")
    assert s.time_limit_source == "stages.prune.time" and "WARNING" not in s.why


class _Sinfo:
    """A Slurm client whose sinfo lists the given partitions; accounting is off."""

    def __init__(self, stdout):
        self.stdout = stdout

    def run(self, argv, check=False):
        if argv[0] == "sinfo":
            return subprocess.CompletedProcess(argv, 0, self.stdout, "")
        return subprocess.CompletedProcess(argv, 1, "", "accounting is off")


def test_submit_preflight_refuses_a_limit_above_the_maxtime_sinfo_reports():
    profile = load_profile("h100-1x8")
    plan = make_plan(profile, load_recipe())
    check_cluster_offers(_Sinfo("batch*|gpu:8|4:00:00|1|n1\ncpu|(null)|infinite|2|c[1-2]\n"), profile, plan.stages)
    with pytest.raises(UserError) as info:
        check_cluster_offers(_Sinfo("batch*|gpu:8|30:00|1|n1\ncpu|(null)|infinite|2|c[1-2]\n"), profile, plan.stages)
    assert info.value.key == "timeouts.batch" and "00:30:00" in str(info.value)


def test_submit_preflight_refuses_cpus_or_memory_per_node_that_too_few_nodes_have():
    """h100-1x8 asks 96 CPUs and all memory (0) per node: a partition of 64-CPU nodes cannot run its stages,
    nor can memory asked above every node's; a mixed partition runs them where enough nodes are big."""
    profile = load_profile("h100-1x8")
    plan = make_plan(profile, load_recipe())
    cpu_nodes = "cpu|(null)|infinite|2|c[1-2]|32|64000\n"
    check_cluster_offers(_Sinfo(f"batch*|gpu:8|4:00:00|2|n[1-2]|128|2000000\n{cpu_nodes}"), profile, plan.stages)
    check_cluster_offers(_Sinfo(f"batch*|gpu:8|4:00:00|1|n1|64|2000000\nbatch*|gpu:8|4:00:00|1|n2|96|2000000\n"
                                f"{cpu_nodes}"), profile, plan.stages)
    check_cluster_offers(_Sinfo("batch*|gpu:8|4:00:00|1|n1\ncpu|(null)|infinite|2|c[1-2]\n"), profile,
                         plan.stages)  # a sinfo without sizes (an older recording) checks nothing more
    with pytest.raises(UserError) as info:
        check_cluster_offers(_Sinfo(f"batch*|gpu:8|4:00:00|2|n[1-2]|64+|2000000\n{cpu_nodes}"), profile,
                             plan.stages)
    assert info.value.key == "cpus_per_node" and info.value.line == 7
    assert "asks 96 CPUs per node on 1 node(s), but no node of partition batch has" in str(info.value)
    assert "(largest: 64, sinfo)" in str(info.value) and "set cpus_per_node to at most 64," in str(info.value)
    big = load_profile("a100-40g-2x8")  # mem_per_node: 480G, 2 nodes of 128 CPUs
    plan = make_plan(big, load_recipe())
    with pytest.raises(UserError) as info:
        check_cluster_offers(_Sinfo("gpu*|gpu:8|infinite|1|n1|128|1000000\ngpu*|gpu:8|infinite|1|n2|128|400000\n"
                                    "cpu|(null)|infinite|2|c[1-2]|32|64000\n"), big, plan.stages)
    assert info.value.key == "mem_per_node" and "480G of memory per node on 2 node(s)" in str(info.value)
    assert "but 1 of partition gpu's nodes have that much" in str(info.value)


# -- d: pruning spans nodes ------------------------------------------------------------------------
def test_three_nodes_of_four_40gib_gpus_prune_at_pp8_over_two_nodes(tmp_path):
    profile, recipe = profile_of(3, 4, 40), load_recipe()
    plan = make_plan(profile, recipe)  # refused before: "pruning needs 36.8 GiB per GPU at PP=4"
    layout = RunLayout(str(tmp_path / "run"))
    for name in ("prune_depth", "prune_width"):
        s = plan.stage(name)
        assert (s.nodes, s.gpus_per_node, s.tp, s.pp, s.dp) == (2, 4, 1, 8, 1)
        assert "one node's PP=4 needs 36.8 GiB" in s.why
        script = executor_for("slurm").render_script("run", layout.run_dir, profile, s, plan.stages)
        assert "#SBATCH --nodes=2\n" in script and "#SBATCH --gpus-per-node=4\n" in script
        assert "--nodes=2 --ntasks-per-node=4" in script
        config = build_stage_config("run", layout, recipe, s)
        validate(config.to_json())  # what the job reads: its trainer takes nodes, GPUs and PP from here
        assert config.parallel == {"nodes": 2, "gpus_per_node": 4, "tp": 1, "pp": 8, "cp": 1, "dp": 1,
                                   "sequence_parallel": False}


def test_pruning_stays_on_one_node_where_it_fits_and_an_explicit_pp_may_span_nodes():
    assert make_plan(load_profile("h100-1x8"), load_recipe()).stage("prune_width").nodes == 1
    with pytest.raises(UserError) as info:
        make_plan(load_profile("h100-1x8"), load_recipe(None, ["stages.prune.pp=16"]))
    assert info.value.key == "stages.prune.pp"
    s = make_plan(profile_of(2, 8, 80), load_recipe(None, ["stages.prune.pp=16"])).stage("prune_width")
    assert (s.nodes, s.gpus_per_node, s.pp) == (2, 8, 16)
