"""What a run and a sweep guarantee: nothing lost, every check before the first job, errors that name the file."""

import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import compose_run
from test_cli import QUICK, symprune, tiny

from symprune.config import settings
from symprune.errors import ConfigError
from symprune.files import check_free_space
from symprune.run.loggers import NoLogger
from symprune.run.plan import plan_run
from symprune.run.runner import execute

ONE_SET = [*(override for override in QUICK if not override.startswith("eval.perplexity.datasets")),
           "eval.perplexity.datasets=[wikitext2]"]


def sweep_args(model_dir, assets, *overrides):
    return ["-m", "model=local", f"model.pretrained={model_dir}", f"paths.assets={assets}", *ONE_SET, "logger=none",
            *overrides]


def records(directory: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in directory.rglob("results.json")}


def test_a_plain_relaunch_resumes_the_sweep(tiny_model_dir, assets, tmp_path):
    """The same command twice: the sweep directory is derived from the sweep's overrides, so the second
    launch finds the first one's records (one deleted here, as if its job had been killed)."""
    args = sweep_args(tiny_model_dir, assets, "score=magnitude", "sparsity.ratio=0.4,0.7")
    done = symprune(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    assert re.fullmatch(r"sweep-[0-9a-f]{10}", sweep.name)
    first = records(sweep)
    assert len(first) == 2
    lost = sorted(first)[1]
    lost.unlink()

    done = symprune(*reversed(args[1:]), "-m", cwd=tmp_path)  # same overrides, another order
    assert done.returncode == 0, done.stderr[-3000:]
    assert [path.name for path in (tmp_path / "outputs" / "multirun").iterdir()] == [sweep.name]
    output = done.stdout + done.stderr
    assert "2 jobs: 1 ran, 1 skipped or reused, 0 failed, 0 invalid" in output
    assert "skipped job #0 (sparsity.ratio=0.4): this config's run record exists" in output
    after = records(sweep)
    assert set(after) == set(first) and after[sorted(first)[0]] == first[sorted(first)[0]]
    groups = {json.loads(path.read_text())["logger"]["group"] for path in after}
    assert len(groups) == 1 and re.fullmatch(rf"{sweep.name}-\d{{8}}-\d{{6}}", groups.pop())


def test_resume_false_still_groups_and_dates_the_sweep(tiny_model_dir, assets, tmp_path):
    done = symprune(*sweep_args(tiny_model_dir, assets, "score=magnitude", "sparsity.ratio=0.3,0.5"), "resume=false",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    groups = {json.loads(path.read_text())["logger"]["group"] for path in records(tmp_path / "outputs")}
    assert len(groups) == 1 and re.fullmatch(r"sweep-[0-9a-f]{10}-\d{8}-\d{6}", groups.pop())


def test_a_sweep_with_a_bad_job_stops_before_any_work(tiny_model_dir, assets, tmp_path):
    done = symprune(*sweep_args(tiny_model_dir, assets, "sparsity.ratio=0.5,1.5,0.6,2.0"), cwd=tmp_path)
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "invalid job #1 (sparsity.ratio=1.5" in output and "sparsity ratio 1.5 is outside [0, 1)" in output
    assert "invalid job #3 (sparsity.ratio=2.0" in output and "2 of 4 jobs are invalid; nothing ran" in output
    assert not records(tmp_path)


def test_continue_on_error_runs_the_valid_jobs_and_reports_the_bad_ones(tiny_model_dir, assets, tmp_path):
    done = symprune(*sweep_args(tiny_model_dir, assets, "sparsity.ratio=1.5,0.5"), "continue_on_error=true",
                    cwd=tmp_path)
    assert done.returncode == 1  # the sweep as a whole did not succeed
    output = done.stdout + done.stderr
    assert "2 jobs: 1 ran, 0 skipped or reused, 0 failed, 1 invalid" in output
    assert "INVALID job #0 (sparsity.ratio=1.5" in output
    (record,) = records(tmp_path)
    assert record.parent.name.startswith("sparsity.ratio-0.5-")  # its directory named by what it varies


def test_a_failed_job_does_not_stop_the_sweep(tiny_model_dir, assets, tmp_path):
    """Job #0 fails at run time (an evaluation window longer than the offline text has tokens is only found
    when the text is read); job #1 still runs and the summary names the failure."""
    broken = tmp_path / "assets"
    shutil.copytree(assets, broken, ignore=shutil.ignore_patterns("c4_like", "hellaswag", "boolq", "arc_*"))
    rows = broken / "wikitext-2-raw" / "test_rows.jsonl"
    rows.write_text("".join(rows.read_text().splitlines(keepends=True)[:21]) + '{"text": "cut off')
    args = ["-m", "model=local", f"model.pretrained={tiny_model_dir}", *ONE_SET, "logger=none",
            f"paths.assets={broken},{assets}"]
    done = symprune(*args, cwd=tmp_path)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "2 jobs: 1 ran, 0 skipped or reused, 1 failed, 0 invalid" in output
    assert f"FAILED job #0 (paths.assets={broken}): ConfigError: offline data file {rows}, line 22, column 10" in output
    assert len(records(tmp_path)) == 1


def test_unwritable_save_model_is_refused_before_any_work(tiny_model_dir, assets, tmp_path):
    cfg = compose_run(*tiny(tiny_model_dir, assets, tmp_path)[:3], "save_model=/proc/symprune-test/model")
    with pytest.raises(ConfigError, match="save_model directory /proc/symprune-test/model cannot be written"):
        plan_run(cfg)


def test_a_disk_without_room_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10 * 2**30, used=0, free=2**29))
    with pytest.raises(ConfigError, match=r"needs about 1.00 GiB, but .* has 0.50 GiB free"):
        check_free_space(tmp_path / "model", 2**30, "save_model directory")


def test_a_failed_save_still_records_the_results(tiny_model_dir, assets, tmp_path, monkeypatch):
    import symprune.run.runner as runner

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner, "save_pruned", full_disk)
    cfg = compose_run(*tiny(tiny_model_dir, assets, tmp_path)[:3], *ONE_SET, f"save_model={tmp_path / 'model'}")
    results = execute(plan_run(cfg), NoLogger())
    assert results.saved_model is None and "No space left on device" in results.save_error
    assert results.metrics["perplexity"]["wikitext2"]["pruned"] > 1

    import symprune.run.job as job

    monkeypatch.setattr(job, "execute", lambda plan, logger: results)
    hydra_cfg = SimpleNamespace(runtime=SimpleNamespace(output_dir=str(tmp_path / "run"), choices={}),
                                job=SimpleNamespace(num=0), overrides=SimpleNamespace(task=[]))
    with pytest.raises(job.SaveFailed, match="No space left on device"):
        job.execute_job(compose_run(*tiny(tiny_model_dir, assets, tmp_path)[:3], "logger=none",
                                    f"save_model={tmp_path / 'model'}"), hydra_cfg, sweep_dir=None)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "No space left on device" in written["save_error"] and written["metrics"] == results.metrics


@pytest.mark.parametrize("override,message", [
    ("+eval.max_windows=4", "unknown config key eval.max_windows (did you mean eval.perplexity.max_windows?)"),
    ("+calibration.nsample=8", "unknown config key calibration.nsample (did you mean calibration.nsamples?)"),
    ("+score.inptu=activation", "unknown config key score.inptu (did you mean score.input?)"),
    ("+refine.max_cycles=3", "unknown config key refine.max_cycles"),  # refine=none has no parameters
])
def test_keys_added_with_plus_must_be_declared(override, message):
    with pytest.raises(ConfigError) as error:
        settings(compose_run(override))
    assert message in str(error.value)


def test_added_local_task_entries_stay_allowed():
    run = settings(compose_run("eval=zeroshot", "+eval.zeroshot.local.capitals.data_files.test=/data/c.jsonl"))
    assert str(run.eval.zeroshot.local["capitals"].data_files["test"]) == "/data/c.jsonl"


def offline_assets(assets: Path, tmp_path: Path, relative: str, content: bytes) -> Path:
    copy = tmp_path / "assets"
    shutil.copytree(assets, copy, ignore=shutil.ignore_patterns("hellaswag", "boolq", "arc_*", "openbookqa"))
    (copy / relative).write_bytes(content)
    return copy


@pytest.mark.parametrize("relative,content,message", [
    ("wikitext-2-raw/test_rows.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": "cut', "line 3, column 10: not valid JSON"),
    ("wikitext-2-raw/test_rows.jsonl", b'{"text": "a"}\n{"title": "b"}\n', "line 2: no text field 'text'"),
    ("wikitext-2/wiki.valid.tokens", b"= Valkyria =\n\xff\xfe\x00garbage", "byte 13 is not utf-8-sig text"),
    ("c4_like/documents.jsonl", b'{"prefix": "x"}\n', "line 1: no text field 'gold_completion'"),
])
def test_broken_data_files_are_named_with_the_place(tiny_model_dir, assets, tmp_path, relative, content, message):
    broken = offline_assets(assets, tmp_path, relative, content)
    cfg = compose_run("model=local", f"model.pretrained={tiny_model_dir}", f"paths.assets={broken}", *ONE_SET,
                      "calibration=c4" if relative.startswith("c4") else "calibration=wikitext2_quick")
    with pytest.raises(ConfigError) as error:
        execute(plan_run(cfg), NoLogger())
    assert f"offline data file {broken / relative}" in str(error.value) and message in str(error.value)
    assert "expected" in str(error.value)


def test_an_empty_model_directory_is_named(tmp_path):
    empty = tmp_path / "model"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"local model directory {empty} has no config.json; expected a save_pretrained"):
        plan_run(compose_run("model=local", f"model.pretrained={empty}"))


def test_broken_weights_are_a_named_error_in_the_log(tiny_model_dir, assets, tmp_path):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    run_dir = tmp_path / "run"
    done = symprune(*tiny(broken, assets, run_dir, "logger=none"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    log = (run_dir / "symprune.log").read_text()
    assert f"cannot load the model weights from local: {broken}" in log
    assert "calibration" in log  # the phases before the failure are in the log too


def test_sigterm_is_logged_and_leaves_no_record(tiny_model_dir, assets, tmp_path):
    run_dir = tmp_path / "run"
    args = [*tiny(tiny_model_dir, assets, run_dir), "calibration.nsamples=64", "calibration.seqlen=256"]
    process = subprocess.Popen([sys.executable, "-m", "symprune", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "WANDB_SILENT": "true"})
    log = run_dir / "symprune.log"
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline and "pruning:" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM; no run record was written" in log.read_text()
    assert not (run_dir / "results.json").exists()
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    wandb_log = next(offline.glob("run-*.wandb")).read_bytes()
    assert b"interrupted" in wandb_log and b"SIGTERM" in wandb_log


def test_outputs_follow_the_umask(tiny_model_dir, assets, tmp_path):
    saved = tmp_path / "model"
    previous = os.umask(0o022)
    try:
        done = symprune(*tiny(tiny_model_dir, assets, tmp_path / "run", "logger=none",
                              "eval.perplexity.datasets=[wikitext2]"), f"save_model={saved}")
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr[-3000:]
    assert stat.S_IMODE((tmp_path / "run" / "results.json").stat().st_mode) == 0o644
    assert stat.S_IMODE(saved.stat().st_mode) == 0o755
    assert stat.S_IMODE((saved / "model.safetensors").stat().st_mode) == 0o644


def test_perplexity_can_be_skipped_for_a_zero_shot_only_run(tiny_model_dir, assets, tmp_path):
    cfg = compose_run(*tiny(tiny_model_dir, assets, tmp_path)[:3], *ONE_SET[:-1], "eval.perplexity.datasets=[]")
    results = execute(plan_run(cfg), NoLogger())
    assert results.metrics["perplexity"] == {} and "evaluation" not in results.timings


def test_tables_refuse_unknown_keys_and_metrics(tiny_model_dir, assets, tmp_path):
    done = symprune(*sweep_args(tiny_model_dir, assets, "score=magnitude,wanda"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    def tables(*args):
        return subprocess.run([str(Path(sys.executable).with_name("symprune-tables")), "pivot", str(tmp_path / "outputs"),
                               *args], capture_output=True, text=True, timeout=300)

    good = tables("--rows", "score", "--columns", "sparsity")
    assert good.returncode == 0 and "| magnitude |" in good.stdout
    typo = tables("--rows", "scroe", "--columns", "sparsity")
    assert typo.returncode == 2 and "key 'scroe' is in none of the 2 records; did you mean score" in typo.stderr
    missing = tables("--rows", "score", "--columns", "sparsity", "--metric", "metrics.perplexity.c4.pruned")
    assert missing.returncode == 2 and "metric 'metrics.perplexity.c4.pruned' is in none of the 2 records" in missing.stderr
