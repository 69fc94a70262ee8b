"""torch.distributed: 2 gloo processes train exactly like one with their global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent / "distributed"
sys.path.insert(0, str(HERE))
from cases import CASES, WALS_CASES, build, wals_fit  # noqa: E402

from recfunnel.cli import main  # noqa: E402
from recfunnel.runs import Run  # noqa: E402
from recfunnel.training import train_step  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch built without torch.distributed"
)


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _torchrun(*args, nnodes_args=("--standalone",), nproc=2, timeout=600):
    argv = [sys.executable, "-m", "torch.distributed.run", *nnodes_args, "--nproc-per-node",
            str(nproc), *args]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_ranks_compute_the_single_process_gradients(tmp_path):
    out = tmp_path / "grads.safetensors"
    _torchrun(str(HERE / "grad_worker.py"), str(out), str(HERE))
    distributed = load_file(str(out))
    for name in CASES:
        net, tensors, rows = build(name)
        train_step(net, tensors, rows)
        for key, p in net.named_parameters():
            if p.grad is None:  # BPR's user biases: in neither
                assert f"{name}/{key}" not in distributed
                continue
            torch.testing.assert_close(
                distributed[f"{name}/{key}"], p.grad.to_dense(), rtol=1e-5, atol=1e-7,
                msg=f"{name}: {key}",
            )  # fmt: skip


def test_other_ranks_leave_with_rank_0(tmp_path):
    """Rank 0 evaluates and saves alone; the others wait for it in ``shutdown`` instead of
    exiting while it still holds gloo connections to them (a process that did could abort)."""
    out = tmp_path / "left"
    _torchrun(str(HERE / "finish_worker.py"), str(out))
    rank0, rank1 = (float(Path(f"{out}.rank{r}").read_text()) for r in range(2))
    assert rank1 >= rank0 - 0.5  # rank 1 left after rank 0's 2 s of work, not before it


def test_a_process_that_loses_its_peer_says_so_in_one_line(tmp_path):
    """Rank 0 crashes; rank 1's collective fails, and the CLI's check recognises that error
    (gloo raises a plain RuntimeError from inside torch.distributed) and names the cause."""
    out = tmp_path / "report.json"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--monitor-interval", "10", str(HERE / "lost_peer_worker.py"), str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode != 0  # rank 0 exited with 3
    report = json.loads(out.read_text())
    assert report["lost_peer"] is True, report
    assert report["plain"] is False
    message = report["message"]
    assert message.startswith("process 1 of 2 stopped: the other training processes stopped")
    assert "\n" not in message and "its error is the first one above" in message


def test_only_errors_about_a_peer_are_taken_for_a_lost_peer(monkeypatch):
    """An error raised inside torch.distributed that names a lost or silent peer is one; a bug
    raised there (a mismatch) keeps its traceback, and so does anything outside a job."""
    from recfunnel import distributed

    where = {"__name__": "torch.distributed.distributed_c10d"}
    exec("def collective(message):\n    raise RuntimeError(message)", where)

    def caught(message):
        try:
            where["collective"](message)
        except RuntimeError as exc:
            return exc

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.lost_peer(caught("[pair.cc:553] Connection closed by peer [127.0.0.1]"))
    assert distributed.lost_peer(caught("Timed out waiting 1800000ms for recv operation"))
    assert not distributed.lost_peer(caught("Tensors must have the same shape"))
    assert not distributed.lost_peer(RuntimeError("Connection closed by peer"))  # not raised there
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.lost_peer(caught("Connection closed by peer"))


def test_nproc_refuses_a_bad_out_before_starting_processes(tmp_path, capsys):
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("keep me")
    code = main(["train", "--preset", "seed", "--nproc", "2", "--out", str(kept), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: will not replace --out") and err.count("\n") == 1
    assert (kept / "notes.txt").read_text() == "keep me"


def test_nproc_reports_a_failed_process_in_one_line(tmp_path):
    """Each process prints its own clean error; the launcher adds one line (which process,
    how it ended), with torchrun's own log lines and failure table silenced."""
    argv = [sys.executable, "-m", "recfunnel", "train", "--train", str(tmp_path / "missing.csv"),
            "--nproc", "2", "--quiet"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), done.stderr
    assert "missing.csv" in lines[0]
    assert lines[-1].startswith("error: training process ")
    assert lines[-1].endswith("of 2 exited with status 2; its error is above")


def test_wals_with_rows_split_over_two_ranks_fits_what_one_process_fits(tmp_path):
    """Each rank solves its rows, Gram matrices are all-reduced and factors all-gathered: both
    ranks end with the single-process factors (up to the order of the Gram sums)."""
    out = tmp_path / "wals.safetensors"
    _torchrun(str(HERE / "wals_worker.py"), str(out), str(HERE))
    ranks = [load_file(f"{out}.rank{r}") for r in range(2)]
    for name in WALS_CASES:
        model = wals_fit(name)
        losses = [e["loss"] for e in model.training_log_.epochs]
        single = {**model._learned_tensors(), "loss": torch.tensor(losses)}
        for rank, tensors in enumerate(ranks):
            for key, value in single.items():
                torch.testing.assert_close(tensors[f"{name}/{key}"], value.reshape(-1)
                                           if key == "global_mean" else value,
                                           rtol=1e-4, atol=1e-5,
                                           msg=f"{name}: {key} on rank {rank}")  # fmt: skip


def _metrics(capsys_out: str) -> dict:
    return json.loads(capsys_out.strip().splitlines()[-1])


def test_two_rank_train_matches_one_process_on_movielens(ml100k, tmp_path, capsys):
    common = ["train", "--data-dir", str(ml100k), "--preset", "seed", "--json", "--quiet"]
    assert main([*common, "--batch-size", "8192", "--out", str(tmp_path / "one")]) == 0
    one = _metrics(capsys.readouterr().out)
    argv = [sys.executable, "-m", "recfunnel", *common, "--batch-size", "4096", "--nproc", "2",
            "--out", str(tmp_path / "two")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = _metrics(done.stdout)
    assert abs(two["recall@10"] - one["recall@10"]) <= 0.01
    run = Run.load(tmp_path / "two")
    assert len(run.recommend(run.users.ids[0], 10).items) == 10


def test_two_nodes_on_localhost(tmp_path, train_csv):
    """Two "machines" (one process each) meeting at a c10d rendezvous endpoint."""
    argv = ["-m", "recfunnel", "train", "--train", str(train_csv), "--preset", "seed",
            "--epochs", "2", "--batch-size", "16", "--json", "--quiet", "--out",
            str(tmp_path / "run")]  # fmt: skip
    with socket.socket() as probe:  # a free port: a fixed one can be held by a leftover
        probe.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{probe.getsockname()[1]}"
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                endpoint,
                "--rdzv-id",
                "recfunnel-test",
                # both "machines" are this one, so each would take itself for the store's
                # host (c10d assigns the ranks; --node-rank is for the static rendezvous)
                "--rdzv-conf",
                f"is_host={int(node == 0)}",
                *argv,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )  # fmt: skip
        for node in (0, 1)
    ]
    results = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, results, strict=True):
        assert node.returncode == 0, err[-3000:]
    printed = [out for out, _ in results if out.strip()]
    assert len(printed) == 1  # rank 0 alone evaluates and prints
    assert "recall@10" in json.loads(printed[0].strip().splitlines()[-1])
    assert (tmp_path / "run" / "manifest.json").is_file()
