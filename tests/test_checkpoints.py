"""Checkpoints and --resume: a resumed fit ends where an uninterrupted one does."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from recfunnel.checkpoints import checkpointing
from recfunnel.data.synthetic import power_law, write_interactions
from recfunnel.errors import RecfunnelError
from recfunnel.models import WALS, TwoTower

DATA = power_law(80, 60, 1200, seed=3)
SETTINGS = [
    dict(softmax="full", reduction="mean", optimizer="adam", history=True, item_bias=True),
    dict(softmax="mixed", negatives=8, logq_correction=True, sparse_updates=True,
         history=True, reduction="mean", optimizer="adam"),
    dict(softmax="in-batch", optimizer="adagrad"),
]  # fmt: skip


@pytest.mark.parametrize("settings", SETTINGS)
def test_resumed_fit_equals_the_uninterrupted_one(tmp_path, settings):
    def fit(epochs, **policy):
        model = TwoTower(dim=8, batch_size=128, epochs=epochs, seed=4, learning_rate=0.05,
                         **settings)  # fmt: skip
        if not policy:
            return model.fit(DATA)
        with checkpointing(tmp_path / "ckpt", **policy):
            return model.fit(DATA)

    straight = fit(5)
    fit(2, every=1)  # "killed" after epoch 2
    resumed = fit(5, every=1, resume=True)
    np.testing.assert_array_equal(resumed.item_vectors().numpy(), straight.item_vectors().numpy())
    np.testing.assert_array_equal(
        resumed.user_vectors(np.arange(80)).numpy(), straight.user_vectors(np.arange(80)).numpy()
    )
    assert [e["epoch"] for e in resumed.training_log_.epochs] == [1, 2, 3, 4, 5]
    assert [e["loss"] for e in resumed.training_log_.epochs] == [
        e["loss"] for e in straight.training_log_.epochs
    ]


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_wals_resumes_from_its_factors(tmp_path, solver):
    def fit(epochs, **policy):
        model = WALS(dim=6, epochs=epochs, solver=solver, seed=2)
        if not policy:
            return model.fit(DATA)
        with checkpointing(tmp_path / solver, **policy):
            return model.fit(DATA)

    straight = fit(4)
    partial = fit(2, every=1)  # "killed" after iteration 2
    resumed = fit(4, every=1, resume=True)
    np.testing.assert_array_equal(resumed.item_vectors().numpy(), straight.item_vectors().numpy())
    assert [e["loss"] for e in resumed.training_log_.epochs] == [
        e["loss"] for e in straight.training_log_.epochs
    ]
    assert (
        resumed.training_log_.epochs[:2] == partial.training_log_.epochs
    )  # read back, not refitted


def test_checkpoint_folder_holds_only_the_latest_epoch(tmp_path):
    with checkpointing(tmp_path / "ckpt", every=2):
        TwoTower(dim=4, epochs=5, batch_size=256).fit(DATA)
    fit = tmp_path / "ckpt" / "fit-1"
    assert json.loads((fit / "latest.json").read_text()) == {"epoch": 5, "folder": "epoch-0005"}
    assert sorted(p.name for p in fit.iterdir()) == ["epoch-0005", "latest.json"]
    assert sorted(p.name for p in (fit / "epoch-0005").iterdir()) == [
        "state.json", "state.safetensors"
    ]  # fmt: skip


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    with checkpointing(tmp_path / "ckpt"):
        TwoTower(dim=4, epochs=1).fit(DATA)
    with (
        checkpointing(tmp_path / "ckpt", resume=True),
        pytest.raises(RecfunnelError, match="written for other data or settings; delete it"),
    ):
        TwoTower(dim=8, epochs=2).fit(DATA)


def _train(train, out, *extra):
    argv = [sys.executable, "-m", "recfunnel", "train", "--train", str(train), "--model",
            "two-tower", "--preset", "seed", "--epochs", "40", "--batch-size", "64", "--dim",
            "8", "--json", "--quiet", "--out", str(out), "--checkpoint-every", "1",
            *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)  # fmt: skip


def _metrics(process):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    metrics = json.loads(out)
    return {k: v for k, v in metrics.items() if "seconds" not in k}


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9")
def test_kill_9_then_resume_reaches_the_uninterrupted_metrics(tmp_path):
    train = tmp_path / "train.parquet"
    write_interactions(power_law(150, 120, 3000, seed=0), train)
    killed = _train(train, tmp_path / "run")
    latest = tmp_path / "run.checkpoints" / "fit-1" / "latest.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and killed.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["epoch"] >= 2:
            break
        time.sleep(0.01)
    assert killed.poll() is None, "the fit ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    reached = json.loads(latest.read_text())["epoch"]
    assert 2 <= reached < 40 and not (tmp_path / "run").exists()
    resumed = _train(train, tmp_path / "run", "--resume")
    straight = _train(train, tmp_path / "straight")
    assert _metrics(resumed) == _metrics(straight)
    assert (tmp_path / "run" / "manifest.json").is_file()
    assert not (tmp_path / "run.checkpoints").exists()  # removed once the run is saved
