"""Issue #9, command-line half: ``train --out`` never loses a user's files, a killed process
never leaves the target without a complete run, and bad input is one line with exit status 2."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recfunnel import artifacts
from recfunnel.cli import main
from recfunnel.errors import ArtifactError, RecfunnelError
from recfunnel.runs import Run

FAST = ["--model", "most-popular"]
REPO = Path(__file__).resolve().parents[1]


def train_argv(train_csv, out, *extra):
    return ["train", "--train", str(train_csv), "--rating-col", "rating", "--out", str(out),
            *FAST, *extra]  # fmt: skip


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def earlier_run(train_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(train_csv, out)) == 0
    capsys.readouterr()
    return out


# ------------------------------------------------------------ data loss
def test_a_folder_holding_a_config_json_is_not_taken_for_a_run(train_csv, tmp_path, capsys):
    # the reproduction: exit 0 and p/src deleted on the old main
    p = tmp_path / "p"
    (p / "src").mkdir(parents=True)
    (p / "config.json").write_text("{}")
    (p / "src" / "main.py").write_text("x")
    before = snapshot(p)
    for extra in ([], ["--overwrite"]):
        assert main(train_argv(train_csv, p, *extra)) == 2
        assert "not part of a recfunnel run (src)" in one_error_line(capsys)
        assert snapshot(p) == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p", "train.csv"]


def test_retraining_into_a_run_with_user_files_keeps_them(train_csv, earlier_run, capsys):
    (earlier_run / "notes.txt").write_text("my notes")
    before = snapshot(earlier_run)
    for extra in ([], ["--overwrite"]):
        assert main(train_argv(train_csv, earlier_run, *extra)) == 2
        err = one_error_line(capsys)
        assert "notes.txt" in err and "move those files out" in err
        assert snapshot(earlier_run) == before


def test_an_intact_run_is_replaced_and_nothing_is_left_beside_it(train_csv, earlier_run, capsys):
    (earlier_run / "metrics.json").stat()
    assert main(train_argv(train_csv, earlier_run, "--seed", "7")) == 0
    assert Run.load(earlier_run).config["data"]["seed"] == 7
    assert sorted(p.name for p in earlier_run.parent.iterdir()) == ["run", "train.csv"]


def test_a_damaged_run_needs_overwrite(train_csv, earlier_run, capsys):
    weights = earlier_run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert main(train_argv(train_csv, earlier_run)) == 2
    err = one_error_line(capsys)
    assert "model.safetensors does not match its checksum" in err and "--overwrite" in err
    assert main(train_argv(train_csv, earlier_run, "--overwrite")) == 0
    Run.load(earlier_run)


@pytest.mark.parametrize("where", [".", "..", "{cwd}"])
def test_the_current_folder_or_one_above_it_is_refused(train_csv, tmp_path, capsys, where,
                                                       monkeypatch):  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    target = where.format(cwd=work)
    assert main(train_argv(train_csv, target)) == 2
    assert "current folder" in one_error_line(capsys)
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv", "work"]


def test_the_out_folder_is_checked_before_training(train_csv, tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained although --out cannot be written")

    monkeypatch.setattr("recfunnel.experiment.train", no_training)
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    bad = [a_file, a_file / "run", Path("/proc/recfunnel-cannot-write-here/run")]
    for out in bad:
        assert main(train_argv(train_csv, out)) == 2
        one_error_line(capsys)
    assert a_file.read_text() == "keep me"


@pytest.mark.parametrize(
    "raised, said",
    [(RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                   "allocate memory: you tried to allocate 800000000000 bytes. Error code 12"),
      "error: out of memory (an allocation of 745.1 GiB); lower --batch-size"),
     (MemoryError(), "error: out of memory; lower --batch-size")],
)  # fmt: skip
def test_running_out_of_memory_is_one_line(train_csv, tmp_path, capsys, monkeypatch, raised, said):
    def allocate(*args, **kwargs):
        raise raised

    monkeypatch.setattr("recfunnel.experiment.train", allocate)
    assert main(train_argv(train_csv, tmp_path / "run")) == 2
    assert one_error_line(capsys).startswith(said)
    assert not (tmp_path / "run").exists()


def test_other_runtime_errors_are_not_taken_for_memory(train_csv, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("recfunnel.experiment.train", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(train_argv(train_csv, tmp_path / "run"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_an_unwritable_parent_fails_before_training(train_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("recfunnel.experiment.train", lambda *a, **k: 1 / 0)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(train_argv(train_csv, locked / "run")) == 2
        assert "cannot write --out" in one_error_line(capsys)
    finally:
        locked.chmod(0o755)


def test_stale_temporaries_of_dead_processes_are_cleaned(train_csv, earlier_run, capsys):
    pid = dead_pid()
    stale_tmp = earlier_run.parent / f".run.tmp-{pid}-00ab"
    stale_old = earlier_run.parent / f".run.old-{pid}-00cd"
    live_tmp = earlier_run.parent / f".run.tmp-{os.getppid()}-00ef"
    for folder in (stale_tmp, stale_old, live_tmp):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    assert main(train_argv(train_csv, earlier_run)) == 0
    left = sorted(p.name for p in earlier_run.parent.iterdir())
    assert left == [live_tmp.name, "run", "train.csv"]  # a live process's folder is its own


def test_a_run_moved_aside_by_a_killed_process_is_put_back(earlier_run):
    # the two-rename fallback killed between its renames: nothing at the path, the run aside
    aside = earlier_run.parent / f".run.old-{dead_pid()}-0a0b"
    os.rename(earlier_run, aside)
    artifacts.clean_stale(earlier_run)
    assert not aside.exists()
    Run.load(earlier_run)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_replacement_works_with_and_without_renameat2(earlier_run, monkeypatch, exchange):
    run = Run.load(earlier_run)
    if not exchange:
        monkeypatch.setattr(artifacts, "_exchange", lambda a, b: False)
    run.metrics = {"again": 1.0}
    run.save(earlier_run)
    assert Run.load(earlier_run).metrics == {"again": 1.0}
    assert sorted(p.name for p in earlier_run.parent.iterdir()) == ["run", "train.csv"]


KILL_LOOP = textwrap.dedent(
    """
    # Fork a child that saves the run over and over, SIGKILL it at a random moment, check that
    # a complete run is at the path; repeat (one interpreter: importing torch is slow).
    import os, random, signal, sys, time
    from recfunnel import artifacts
    from recfunnel.runs import Run

    path, kills = sys.argv[1], int(sys.argv[2])
    exchange = artifacts._exchange
    run = Run.load(path)
    random.seed(0)
    saves = 0
    for n in range(2 * kills):
        mode = "renameat2" if n < kills else "two-renames"
        artifacts._exchange = exchange if mode == "renameat2" else lambda a, b: False
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(reader)
            while True:
                run.metrics = {"save": n}
                run.save(path)
                os.write(writer, b".")
        os.close(writer)
        time.sleep(random.uniform(0.05, 0.5))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        saves += len(os.read(reader, 1 << 20))
        os.close(reader)
        if mode == "two-renames":
            artifacts.clean_stale(path)  # what the next save does first
        Run.load(path)  # every checksum verifies
        artifacts.check_replaceable(path)  # still a run holding nothing else
    print(saves)
    """
)


def test_a_kill_at_any_moment_of_a_save_leaves_a_complete_run(earlier_run):
    done = subprocess.run(
        [sys.executable, "-c", KILL_LOOP, str(earlier_run), "6"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 0  # the child did save: the kills landed among saves
    artifacts.clean_stale(earlier_run)
    assert sorted(p.name for p in earlier_run.parent.iterdir()) == ["run", "train.csv"]


def test_kill_9_during_train_keeps_the_earlier_run(train_csv, earlier_run):
    before = snapshot(earlier_run)
    argv = ["train", "--train", str(train_csv), "--rating-col", "rating", "--out",
            str(earlier_run), "--model", "two-tower", "--epochs", "9999", "--dim", "4"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "recfunnel.cli", *argv],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    time.sleep(3.0)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert snapshot(earlier_run) == before
    Run.load(earlier_run)


# ------------------------------------------------------------ permissions
def test_written_files_and_folders_follow_the_umask(train_csv, tmp_path, capsys):
    old = os.umask(0o027)
    try:
        out = tmp_path / "run"
        assert main(train_argv(train_csv, out)) == 0
        export = tmp_path / "recs.csv"
        assert main(["recommend", str(out), "--all-users", "-k", "2", "--output", str(export)]) == 0
        synth = tmp_path / "s.npz"
        assert main(["synth", "--users", "5", "--items", "5", "--interactions", "10",
                     "--out", str(synth)]) == 0  # fmt: skip
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    for path in [*out.iterdir(), export, synth]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


# ------------------------------------------------------------ NaN weights
def test_nan_weights_are_refused_at_save_and_at_load(earlier_run, tmp_path, capsys):
    run = Run.load(earlier_run)
    run.popularity[0] = np.nan
    with pytest.raises(ArtifactError, match="NaN or infinite"):
        run.save(tmp_path / "nan-run")
    assert not (tmp_path / "nan-run").exists()

    # a run whose weights were NaN when written (consistent manifest): evaluate must refuse it
    from safetensors.torch import load_file, save_file

    weights = earlier_run / "model.safetensors"
    tensors = load_file(weights)
    tensors["run.popularity"][:] = torch.nan
    save_file(tensors, weights)
    artifacts.write_manifest(earlier_run)
    with pytest.raises(ArtifactError, match="NaN or infinite"):
        Run.load(earlier_run)
    assert main(["evaluate", str(earlier_run)]) == 2
    assert "NaN or infinite" in one_error_line(capsys)


def test_checksums_and_atomic_writes_live_in_one_module():
    src = REPO / "src" / "recfunnel"
    offenders = [
        str(path.relative_to(src))
        for path in src.rglob("*.py")
        if path.name != "artifacts.py"
        and "serving" not in path.parts
        and any(word in path.read_text() for word in ("hashlib.sha256", "mkstemp", "mkdtemp"))
    ]
    assert offenders == []


def test_manifest_lists_every_file_of_a_saved_run(earlier_run):
    manifest = json.loads((earlier_run / "manifest.json").read_text())
    assert set(manifest) == {p.name for p in earlier_run.iterdir()} - {"manifest.json"}


# ------------------------------------------------------------ bad input: one line, exit 2
def write_parquet(path: Path, columns: dict) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the error line must contain)."""
    big = tmp / "big-field.csv"
    big.write_text("user,item\nu1," + "x" * 140_000 + "\n")
    quote = tmp / "open-quote.csv"
    quote.write_text('user,item\nu1,"i1\n' + "u2,i2\n" * 30_000)
    fake = tmp / "fake.parquet"
    fake.write_text("user,item\nu1,i1\n")
    deep = tmp / "deep.jsonl"
    deep.write_text('{"user": ' + "[" * 100_000 + "]" * 100_000 + ', "item": "i"}\n')
    huge = tmp / "huge-number.jsonl"
    huge.write_text('{"user": 1' + "0" * 5000 + ', "item": "i"}\n')
    listed = tmp / "list-id.jsonl"
    listed.write_text('{"user": "u1", "item": "i1"}\n{"user": ["u2"], "item": "i1"}\n')
    boolean = tmp / "bool-id.jsonl"
    boolean.write_text('{"user": true, "item": "i1"}\n')
    folder = tmp / "folder.csv"
    folder.mkdir()
    endless = tmp / "endless-time.csv"
    endless.write_text("user,item,ts\nu1,i1,inf\n")
    far = tmp / "far-time.csv"
    far.write_text("user,item,ts\nu1,i1,1e300\n")
    return {
        "field over 128 KiB": (big, "128 KiB"),
        "unclosed quote": (quote, "quote"),
        "not Parquet": (fake, "as Parquet"),
        "JSON nested 100k deep": (deep, "nested too deeply"),
        "JSON number of 5000 digits": (huge, "cannot be read as JSON"),
        "list id": (listed, "row 2"),
        "bool id": (boolean, "is a bool"),
        "a folder": (folder, "is a folder"),
        "infinite time": (endless, "neither epoch"),
        "time out of range": (far, "neither epoch"),
    }


CASES = [
    "field over 128 KiB", "unclosed quote", "not Parquet", "JSON nested 100k deep",
    "JSON number of 5000 digits", "list id", "bool id", "a folder", "infinite time",
    "time out of range",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_bad_training_file_is_one_line(tmp_path, capsys, case):
    path, words = bad_files(tmp_path)[case]
    argv = ["train", "--train", str(path), "--model", "most-popular", "--out", str(tmp_path / "r")]
    if "time" in case:
        argv += ["--time-col", "ts"]
    assert main(argv) == 2
    assert words in one_error_line(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        ("float", [1.0, 2.0]),
        ("list", [[1], [2]]),
        ("struct", [{"a": 1}, {"a": 2}]),
        ("binary", [b"u1", b"u2"]),
    ],
)
def test_parquet_ids_of_a_non_id_type_are_refused(tmp_path, capsys, kind, values):
    pa = pytest.importorskip("pyarrow")
    typed = pa.array(values, type=pa.binary()) if kind == "binary" else pa.array(values)
    path = write_parquet(tmp_path / f"{kind}.parquet", {"user": typed, "item": ["i1", "i2"]})
    argv = ["train", "--train", str(path), "--model", "most-popular"]
    assert main(argv) == 2
    err = one_error_line(capsys)
    assert "column 'user' (user ids)" in err and "cast the column" in err


def test_parquet_integer_and_dictionary_ids_are_read(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    users = [u for u in range(8) for _ in range(6)]
    items = pa.array([f"i{(u * 3 + j) % 10}" for u in range(8) for j in range(6)])
    path = write_parquet(
        tmp_path / "ok.parquet", {"user": pa.array(users), "item": items.dictionary_encode()}
    )
    assert main(["train", "--train", str(path), "--model", "most-popular", "--json"]) == 0
    capsys.readouterr()


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path, capsys):
    rows = "\n".join(f"u{u},i{(u + j) % 9}" for u in range(9) for j in range(4))
    for suffix, text in (
        (".csv", "user,item\n" + rows),
        (".tsv", "user\titem\n" + rows.replace(",", "\t")),
    ):  # noqa: E501
        path = tmp_path / f"bom{suffix}"
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert main(["train", "--train", str(path), "--model", "most-popular", "--json"]) == 0
        capsys.readouterr()
    jsonl = tmp_path / "bom.jsonl"
    lines = [
        json.dumps({"user": f"u{u}", "item": f"i{(u + j) % 9}"}) for u in range(9) for j in range(4)
    ]  # noqa: E501
    jsonl.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    assert main(["train", "--train", str(jsonl), "--model", "most-popular", "--json"]) == 0


def test_dropped_test_rows_are_counted_and_explained(train_csv, tmp_path, capsys):
    test = tmp_path / "test.csv"
    test.write_text(
        "user,item,rating\nuser0,item0,5\nuser1,item1,4\n"
        + "".join(f"stranger{n},item0,3\n" for n in range(5))
        + "user2,unheard-of,1\n"
    )
    argv = train_argv(train_csv, tmp_path / "run", "--test", str(test), "--json")
    assert main(argv) == 0
    out = capsys.readouterr()
    metrics = json.loads(out.out)
    assert metrics["test_rows_read"] == 8 and metrics["test_rows_dropped"] == 6
    assert metrics["test_rows_dropped_unknown_user"] == 5
    assert metrics["test_rows_dropped_unknown_item"] == 1
    assert "note: dropped 6 of 8 rows" in out.err and "check that its ids" in out.err
    assert main(["evaluate", str(tmp_path / "run"), "--test", str(test), "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["test_rows_dropped"] == 6 and "dropped 6 of 8" in out.err


@pytest.mark.parametrize("where", ["{tmp}", "{file}/recs.csv", "/proc/recfunnel-no/recs.csv"])
def test_recommend_output_at_a_folder_or_unwritable_place(earlier_run, tmp_path, capsys, where):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep")
    output = where.format(tmp=tmp_path, file=a_file)
    argv = ["recommend", str(earlier_run), "--all-users", "--output", output]
    assert main(argv) == 2
    assert "--output" in one_error_line(capsys)
    assert a_file.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "run", "train.csv"]


def test_os_errors_on_user_paths_are_one_line(tmp_path, capsys):
    argv = ["synth", "--users", "3", "--items", "3", "--interactions", "3",
            "--out", "/proc/recfunnel-no/s.csv"]  # fmt: skip
    assert main(argv) == 2
    one_error_line(capsys)


def test_a_tiny_catalogue_trains_and_evaluates(tmp_path, capsys):
    # three rows, two items: fewer items than the smallest cut-off used to crash the metrics
    path = tmp_path / "tiny.csv"
    path.write_text("user,item\na,x\nb,y\na,y\n")
    assert main(["train", "--train", str(path), "--model", "most-popular", "--json"]) == 0


# ------------------------------------------------------------ repeated (user, item) rows
@pytest.fixture
def event_log(tmp_path) -> tuple[Path, Path]:
    """A play log where user u plays items u..u+3 once and item u a second and third time."""
    rows = ["user,item,rating,ts"]
    t = 0
    for u in range(10):
        for j in range(4):
            for _ in range(3 if j == 0 else 1):
                t += 1
                rows.append(f"u{u},i{(u + j) % 12},{1 + (t % 5)},{t}")
    log = tmp_path / "log.csv"
    log.write_text("\n".join(rows) + "\n")
    test = tmp_path / "log-test.csv"
    test.write_text("user,item,rating,ts\nu0,i5,3,999\nu1,i7,4,999\n")
    return log, test


@pytest.mark.parametrize(
    ("model", "policy", "rows", "weights"),
    [
        ("two-tower", "keep", 60, None),  # each play a training example, as TFRS trains
        ("most-popular", "keep", 60, None),
        ("wals", "sum", 40, 3.0),  # three plays: confidence 3
        ("bpr", "sum", 40, 3.0),
        ("ease", "sum", 40, 3.0),
        ("sgd-mf", "mean", 40, None),  # a rating model: one rating per pair, the average
    ],
)
def test_an_event_log_trains_without_flags(event_log, model, policy, rows, weights):
    from recfunnel import experiment
    from recfunnel.data.sources import DataSpec

    log, test = event_log
    columns = {"user": "user", "item": "item", "rating": "rating", "time": "ts"}
    spec = DataSpec(dataset=None, train=str(log), test=str(test), columns=columns)
    extra = {"epochs": 1} if model in ("two-tower", "bpr", "sgd-mf") else {}
    run, _, fit_rows, _ = experiment.train(spec, experiment.build_model(model, **extra))
    assert run.config["data"]["duplicates"] == policy
    assert len(fit_rows) == rows
    if weights is None:
        assert fit_rows.weights is None
    else:
        assert fit_rows.weights.max() == weights


def test_the_duplicates_flag_overrides_the_model_and_error_refuses(event_log, tmp_path, capsys):
    log, test = event_log
    base = ["train", "--train", str(log), "--test", str(test), "--model", "most-popular",
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert main([*base, "--duplicates", "sum"]) == 0
    assert Run.load(tmp_path / "r").config["data"]["duplicates"] == "sum"
    assert main([*base, "--duplicates", "error"]) == 2
    assert "20 repeated (user, item) rows" in one_error_line(capsys)


def test_a_file_added_to_the_old_run_during_training_is_never_deleted(earlier_run):
    run = Run.load(earlier_run)
    checked_again = pytest.raises(RecfunnelError, match="notes.txt")  # just before the swap
    with checked_again, artifacts.atomic_dir(earlier_run) as tmp:
        (tmp / "config.json").write_text("{}")
        (earlier_run / "notes.txt").write_text("written while training ran")
    assert (earlier_run / "notes.txt").read_text() == "written while training ran"
    Run.load(earlier_run)
    assert sorted(p.name for p in earlier_run.parent.iterdir()) == ["run", "train.csv"]
    # and if it lands after that check, in the instant before the swap, it is kept aside
    (earlier_run / "notes.txt").unlink()
    real, calls = artifacts.check_replaceable, []

    def check_then_write(target, **kwargs):
        real(target, **kwargs)
        calls.append(target)
        if len(calls) == 2:  # the check just before the swap has passed
            (earlier_run / "late.txt").write_text("late")

    with pytest.MonkeyPatch.context() as patch, pytest.warns(UserWarning, match="kept in"):
        patch.setattr(artifacts, "check_replaceable", check_then_write)
        run.save(earlier_run)
    kept = list(earlier_run.parent.glob("run.kept-*"))
    assert len(kept) == 1 and (kept[0] / "late.txt").read_text() == "late"
    Run.load(earlier_run)
