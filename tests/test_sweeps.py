"""Resumable sweeps: a real kill, then a relaunch that runs only what is missing."""

import json
import os
import re
import signal
import subprocess
import sys
import time

from test_cli import QUICK, symprune

RATIOS = "sparsity.ratio=0.2,0.4,0.6,0.8"


def sweep_args(model_dir, assets, sweep):
    return ["-m", "model=local", f"model.pretrained={model_dir}", f"paths.assets={assets}", *QUICK,
            "eval.perplexity.datasets=[wikitext2]", "logger=none", RATIOS, f"hydra.sweep.dir={sweep}"]


def records(sweep):
    return {path: path.stat().st_mtime_ns for path in sweep.glob("*/results.json")}


def test_killed_sweep_resumes_with_exactly_the_missing_runs(tiny_model_dir, assets, tmp_path):
    sweep = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, "-m", "symprune", *sweep_args(tiny_model_dir, assets, sweep)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "WANDB_SILENT": "true"},
    )
    deadline = time.time() + 600
    while len(records(sweep)) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = records(sweep)
    assert len(before) == 2, "the sweep should have been killed after its second run"

    done = symprune(*sweep_args(tiny_model_dir, assets, sweep))
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert output.count("this config's run record exists") == 2  # not launched: the summary says why
    assert output.count("run record: ") == 2
    after = records(sweep)
    assert len(after) == 4
    assert all(after[path] == mtime for path, mtime in before.items())  # the first two were not rerun
    ratios = sorted(json.loads(path.read_text())["config"]["sparsity"]["ratio"] for path in after)
    assert ratios == [0.2, 0.4, 0.6, 0.8]
    assert not list((sweep / ".claims").iterdir())


def test_a_config_claimed_by_a_live_job_is_skipped(tmp_path):
    from symprune.run.claims import claim

    with claim(tmp_path, "abc") as first:
        assert first
        with claim(tmp_path, "abc") as second:  # same process: alive
            assert not second
    (tmp_path / ".claims" / "dead").write_text(f"{os.uname().nodename} 999999999")
    with claim(tmp_path, "dead") as taken_over:
        assert taken_over


def test_parallel_jobs_of_one_config_write_one_record(tiny_model_dir, assets, tmp_path):
    """Two joblib processes given the same config at once: one runs it, the other skips it."""
    sweep = tmp_path / "sweep"
    args = [a for a in sweep_args(tiny_model_dir, assets, sweep) if a != RATIOS]
    done = symprune(*args, "sparsity.ratio=0.5,0.50", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(records(sweep)) == 1
    output = done.stdout + done.stderr
    assert output.count("skipped: ") == 1


def test_launcher_configs_compose():
    from conftest import compose_run

    parallel = compose_run("hydra/launcher=parallel", hydra=True)
    slurm = compose_run("hydra/launcher=slurm", hydra=True)
    assert parallel.hydra.launcher._target_.endswith("JoblibLauncher") and parallel.hydra.launcher.n_jobs == 2
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.gpus_per_node == 1


def test_records_of_earlier_sweeps_are_reused(tiny_model_dir, assets, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    args = [a for a in sweep_args(tiny_model_dir, assets, first) if a != RATIOS]
    done = symprune(*args, "sparsity.ratio=0.3,0.6")
    assert done.returncode == 0, done.stderr[-3000:]
    args = [a for a in sweep_args(tiny_model_dir, assets, second) if a != RATIOS]
    done = symprune(*args, "sparsity.ratio=0.6,0.7", f"reuse_from=[{first}]", "score=ria")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count("run record: ") == 2  # score=ria differs: nothing to reuse
    done = symprune(*[a for a in sweep_args(tiny_model_dir, assets, tmp_path / "third") if a != RATIOS],
                    "sparsity.ratio=0.6,0.7", f"reuse_from=[{first}]")
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert output.count("reused: the run record of the same config") == 1 and output.count("run record: ") == 1
    reused = [json.loads(p.read_text()) for p in (tmp_path / "third").glob("*/results.json")]
    (copy,) = [r for r in reused if r["reused_from"]]
    original = json.loads(open(copy["reused_from"]).read())
    assert copy["metrics"] == original["metrics"] and copy["config_hash"] == original["config_hash"]
    assert "sparsity.ratio=0.6" in copy["overrides"] and copy["config"]["sparsity"]["ratio"] == 0.6


def test_records_from_before_an_option_existed_hash_as_its_default(tiny_model_dir, assets):
    """An identity written before `eval.zeroshot` and `save_masks` existed stands for today's default config."""
    from conftest import compose_run

    from symprune.run.identity import config_hash
    from symprune.run.plan import plan_run

    plan = plan_run(compose_run("model=local", f"model.pretrained={tiny_model_dir}", f"paths.assets={assets}",
                                "score=ria", "sparsity=nm_2_4"))
    older = json.loads(json.dumps(plan.identity))
    del older["config"]["eval"]["zeroshot"], older["config"]["eval"]["perplexity"]["cache_dense"]
    assert config_hash(older) == plan.config_hash
    older["config"]["eval"]["perplexity"]["seqlen"] = 512
    assert config_hash(older) != plan.config_hash


def files(sweep):
    return {path.relative_to(sweep): path.read_bytes() for pattern in ("*/results.json", "*/masks.safetensors")
            for path in sweep.glob(pattern)}


def test_a_changed_job_list_never_overwrites_another_configs_record(tiny_model_dir, assets, tmp_path):
    """Job numbers move when values are added, removed or reordered; job directories are named by identity,
    so the relaunch writes only its new config and every earlier record and mask file stays byte for byte."""
    sweep = tmp_path / "sweep"
    base = [a for a in sweep_args(tiny_model_dir, assets, sweep) if a != RATIOS]
    done = symprune(*base, "sparsity.ratio=0.3,0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    before = files(sweep)
    assert len(before) == 4
    assert all(re.fullmatch(r"sparsity\.ratio-0\.[35]-[0-9a-f]{12}", str(path.parent)) for path in before)

    done = symprune(*base, "sparsity.ratio=0.2,0.3")  # 0.5 removed, 0.2 added in front: job #0 is now 0.2
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "2 jobs: 1 ran, 1 skipped or reused" in output
    assert output.count("run record: ") == 1
    after = files(sweep)
    assert all(after[path] == content for path, content in before.items())
    ratios = sorted(json.loads(after[path])["config"]["sparsity"]["ratio"] for path in after if path.name == "results.json")
    assert ratios == [0.2, 0.3, 0.5]
    for path in after:
        if path.name == "results.json":
            assert str(path.parent).endswith(json.loads(after[path])["config_hash"][:12])


def test_a_record_made_with_other_software_is_reused_only_when_accepted(tiny_model_dir, assets, tmp_path):
    sweep = tmp_path / "sweep"
    args = [a for a in sweep_args(tiny_model_dir, assets, sweep) if a != RATIOS]
    done = symprune(*args, "sparsity.ratio=0.3")
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = sweep.glob("*/results.json")
    record = json.loads(path.read_text())
    record["versions"]["torch"] = "2.0.0"
    path.write_text(json.dumps(record))

    refused = symprune(*args, "sparsity.ratio=0.3")
    output = refused.stdout + refused.stderr
    assert refused.returncode == 2, output[-3000:]
    assert "made with other software (torch: 2.0.0 -> " in output and "reuse_accept_env=true" in output
    assert "run record: " not in output and json.loads(path.read_text()) == record  # nothing ran, nothing written

    accepted = symprune(*args, "sparsity.ratio=0.3", "reuse_accept_env=true")
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert "1 jobs: 0 ran, 1 skipped or reused" in accepted.stdout + accepted.stderr
