"""Sweeps whose jobs run elsewhere, as on SLURM: claims that a job on another node cannot hold forever, and a
sweep launched through submitit (its local executor pickles each job and runs it in a separate process,
as a SLURM node would), then relaunched."""

import os
import socket
import threading
import time

import pytest
from test_cli import symprune

from symprune.run import claims
from symprune.run.claims import CLAIMS_DIR, claim

OTHER_HOST = "another-node"


def write_claim(sweep, digest, holder, age):
    """A claim file as another job left it, its heartbeat ``age`` seconds old."""
    path = sweep / CLAIMS_DIR / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(holder)
    beat = time.time() - age
    os.utime(path, (beat, beat))
    return path


def heartbeat_threads(digest):
    return [thread for thread in threading.enumerate() if thread.name == f"symprune-claim-{digest}"]


def test_a_claim_from_another_host_blocks_while_its_heartbeat_is_fresh(tmp_path):
    path = write_claim(tmp_path, "abc", f"{OTHER_HOST} 1 token", age=claims.CLAIM_EXPIRY - 60)
    with claim(tmp_path, "abc") as claimed:
        assert not claimed
    assert path.read_text() == f"{OTHER_HOST} 1 token"  # left to its holder


@pytest.mark.parametrize("holder", [f"{OTHER_HOST} 1 token", f"{OTHER_HOST} 1", "garbage"])
def test_a_claim_whose_heartbeat_expired_is_taken_over_from_any_host(tmp_path, holder):
    path = write_claim(tmp_path, "abc", holder, age=claims.CLAIM_EXPIRY + 1)
    with claim(tmp_path, "abc") as claimed:
        assert claimed
        assert path.read_text().split()[:2] == [socket.gethostname(), str(os.getpid())]
        assert time.time() - path.stat().st_mtime < 60
    assert not path.exists()


def test_a_dead_process_of_this_host_loses_its_claim_at_once(tmp_path):
    write_claim(tmp_path, "abc", f"{socket.gethostname()} 999999999 token", age=0)
    with claim(tmp_path, "abc") as claimed:
        assert claimed


def test_a_live_holder_of_this_host_keeps_its_claim(tmp_path):
    with claim(tmp_path, "abc") as first:
        assert first
        with claim(tmp_path, "abc") as second:
            assert not second


def test_the_heartbeat_advances_while_held_and_stops_on_release(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "HEARTBEAT_INTERVAL", 0.05)
    path = tmp_path / CLAIMS_DIR / "abc"
    with claim(tmp_path, "abc") as claimed:
        assert claimed
        (thread,) = heartbeat_threads("abc")
        assert thread.daemon
        old = time.time() - 3600
        os.utime(path, (old, old))
        deadline = time.time() + 10
        while path.stat().st_mtime < old + 1 and time.time() < deadline:
            time.sleep(0.01)
        assert time.time() - path.stat().st_mtime < 10, "the heartbeat did not refresh the claim"
        with claim(tmp_path, "abc") as other:  # what another job sees meanwhile
            assert not other
    assert not path.exists()
    assert not thread.is_alive() and not heartbeat_threads("abc")
    time.sleep(0.2)  # several intervals: nothing writes the claim again
    assert not path.exists()


def test_a_claim_taken_over_meanwhile_is_left_to_its_new_holder(tmp_path, monkeypatch):
    """A holder that stalled past the expiry finds its claim someone else's: it neither refreshes nor removes it."""
    monkeypatch.setattr(claims, "HEARTBEAT_INTERVAL", 0.05)
    path = tmp_path / CLAIMS_DIR / "abc"
    with claim(tmp_path, "abc") as claimed:
        assert claimed
        path.write_text(f"{OTHER_HOST} 1 token")
        old = time.time() - 3600
        os.utime(path, (old, old))
        time.sleep(0.3)
        assert path.stat().st_mtime == pytest.approx(old)
    assert path.read_text() == f"{OTHER_HOST} 1 token"


def submitit_sweep(sweep):
    return symprune("-m", "model=synthetic", "calibration=random", "eval=perplexity_random", "calibration.nsamples=4",
                    "calibration.seqlen=32", "eval.perplexity.seqlen=32", "eval.perplexity.max_windows=2",
                    "progress=false", "logger=none", "sparsity.ratio=0.3,0.5", "hydra/launcher=submitit_local",
                    f"hydra.sweep.dir={sweep}")


def test_a_submitit_sweep_runs_each_job_in_its_own_process_and_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    done = submitit_sweep(sweep)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    records = {path: path.read_bytes() for path in sorted(sweep.glob("*/results.json"))}
    assert [path.parent.name[:len("sparsity.ratio-0.3-")] for path in records] == ["sparsity.ratio-0.3-", "sparsity.ratio-0.5-"]
    # submitit ran each job as a separate pickled job: its own log and pickled result
    logs = sorted(sweep.glob(".submitit/*/*_log.out"))
    assert len(logs) == 2 and all("Job completed successfully" in log.read_text() for log in logs)
    assert len(list(sweep.glob(".submitit/*/*_result.pkl"))) == 2
    assert "2 jobs: 2 ran, 0 skipped" in done.stdout + done.stderr

    again = submitit_sweep(sweep)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    output = again.stdout + again.stderr
    assert "2 jobs: 0 ran, 2 skipped" in output
    assert output.count("skipped job #") == 2 and output.count("this config's run record exists") == 2
    assert {path: path.read_bytes() for path in sorted(sweep.glob("*/results.json"))} == records
    assert sorted(sweep.glob(".submitit/*/*_log.out")) == logs  # finished jobs are not submitted again
    assert not list((sweep / CLAIMS_DIR).iterdir())
