"""Writing files and folders so that nothing a user owns is ever lost: the one copy of
recfunnel's checksums, atomic writes and run-folder replacement.

* :func:`sha256_file` - the checksum recorded in a run's ``manifest.json``.
* :func:`atomic_file` - write a file under a temporary sibling name, then rename it into place;
  a crash leaves either the old file or the new one, never half of one.
* :func:`atomic_dir` - the same for a folder (a saved run). An existing folder at the target is
  replaced only when it is provably a recfunnel run (see :func:`check_replaceable`); the swap is
  one ``renameat2(RENAME_EXCHANGE)`` on Linux, so a process killed at any moment leaves a complete
  folder at the path. Elsewhere two renames are used and a run left aside by a killed process
  (``.NAME.old-PID-*``) is put back the next time that target is written.

Temporary siblings are named ``.NAME.tmp-PID-RANDOM`` / ``.NAME.old-PID-RANDOM``; the ones whose
process is dead are cleaned by :func:`clean_stale`. Files and folders are created with the
process umask, like any other program's (``tempfile`` would force 0600/0700).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path

from recfunnel.errors import RecfunnelError

MANIFEST = "manifest.json"
RUN_FORMAT = "recfunnel-run"

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    with open(path, "rb") as fh:
        return sha256_stream(fh)


def sha256_stream(fh, limit: int | None = None) -> str | None:
    """Hex SHA-256 of what an open binary file holds, read in 1 MiB blocks; None when it
    holds more than ``limit`` bytes (the run loader bounds what it reads)."""
    digest, total = hashlib.sha256(), 0
    for block in iter(lambda: fh.read(1 << 20), b""):
        total += len(block)
        if limit is not None and total > limit:
            return None
        digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or a pid we cannot check): leave its files
    return True


def clean_stale(target: str | Path) -> None:
    """Remove ``.NAME.tmp-PID-*`` siblings of ``target`` left by dead processes, and put back a
    run a dead process had moved aside (``.NAME.old-PID-*``) if nothing is at ``target``."""
    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-(\d+)-[0-9a-f]+$")
    try:
        siblings = sorted(target.parent.iterdir())
    except OSError:
        return
    for path in siblings:
        match = pattern.match(path.name)
        if match is None or _pid_alive(int(match.group(2))):
            continue
        if match.group(1) == "old" and not os.path.lexists(target):
            with contextlib.suppress(OSError):
                os.rename(path, target)  # the killed process had moved the run aside
                continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_kwargs):
    """Yield a file object whose contents replace ``path`` when the block ends without error.

    ``mode`` is ``"w"`` or ``"wb"``; text defaults to UTF-8. The parent folder must exist.
    """
    path = Path(path)
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    tmp = _sibling(path, "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        with open(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_path(path: str | Path):
    """Like :func:`atomic_file` but yields a temporary *path* for writers that take a file name
    (pyarrow, numpy); its suffix matches ``path``'s."""
    return _AtomicPath(Path(path))


class _AtomicPath:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        self.tmp = self.path.parent / (_sibling(self.path, "tmp").name + self.path.suffix)
        os.close(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            return
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)


def umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it is racy)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as fh:
            line = next(line for line in fh if line.startswith("Umask:"))
        return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> None:
    """Give a file written by a library that forces 0600 (safetensors) the usual 0666 & ~umask."""
    os.chmod(path, 0o666 & ~umask())


def write_json(path: str | Path, data) -> None:
    """Write ``data`` as indented JSON (a plain write: used inside a temporary folder)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_manifest(folder: str | Path) -> dict[str, str]:
    """Checksum every file in ``folder`` into ``folder/manifest.json`` and return the mapping."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    manifest = {name: sha256_file(folder / name) for name in names}
    write_json(folder / MANIFEST, manifest)
    return manifest


# ------------------------------------------------------------ run folders
def _problem(target: Path) -> tuple[str, bool] | None:
    """Why ``target`` (an existing, non-empty folder) may not be replaced, or ``None``.

    Returns ``(reason, overwritable)``: ``overwritable`` is true when every entry carries a run
    file name and config.json says it is a recfunnel run, so ``--overwrite`` may replace it.
    """
    entries = {p.name: p for p in target.iterdir()}
    manifest = None
    with contextlib.suppress(OSError, ValueError):
        if entries.get(MANIFEST) is not None and entries[MANIFEST].is_file():
            manifest = json.loads(entries[MANIFEST].read_text(encoding="utf-8"))
    listed = set(manifest) if isinstance(manifest, dict) else set()
    from recfunnel.runs import FILES  # the names a run holds, whatever its manifest says

    known = listed | set(FILES) | {MANIFEST}
    foreign = sorted(name for name, p in entries.items() if name not in known or not _plain(p))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return (f"it holds files that are not part of a recfunnel run ({shown})", False)
    declared = False
    with contextlib.suppress(OSError, ValueError, AttributeError):
        config = json.loads((target / "config.json").read_text(encoding="utf-8"))
        declared = config.get("format") == RUN_FORMAT
    if not declared:
        return ("it is not a recfunnel run (no config.json of format 'recfunnel-run')", False)
    if manifest is None or not isinstance(manifest, dict):
        return ("its manifest.json is missing or unreadable", True)
    for name in sorted(set(entries) - {MANIFEST}):
        if name not in manifest:
            return (f"{name} is not in its manifest.json", True)
        if not isinstance(manifest[name], str) or sha256_file(entries[name]) != manifest[name]:
            return (f"{name} does not match its checksum in manifest.json", True)
    missing = sorted(set(manifest) - set(entries))
    if missing:
        return (f"{missing[0]} listed in its manifest.json is missing", True)
    return None


def _plain(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _is_cwd_or_above(target: Path) -> bool:
    try:
        here = Path.cwd().resolve()
    except OSError:
        return False
    return here == target or target in here.parents


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_replaceable(target: str | Path, *, overwrite: bool = False, flag: str = "--out") -> None:
    """Refuse, with one line, a target folder that cannot safely receive a run.

    Accepted: a path that does not exist yet (its nearest existing parent must be a folder we
    can create files in), an empty folder, or a recfunnel run whose files all verify against its
    manifest and which holds nothing else. ``overwrite`` also accepts a run whose files do not
    verify; a folder holding anything that is not a run file is never accepted.
    """
    target = Path(target)
    shown = str(target)
    fix = f"choose another {flag} (a new folder name such as runs/my-run)"
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError) as exc:
        raise RecfunnelError(f"cannot use {flag} {shown}: {exc}; {fix}") from None
    if _is_cwd_or_above(resolved):
        raise RecfunnelError(
            f"{flag} {shown} is the current folder or one above it, which a run must never "
            f"replace; {fix}"
        )
    if target.is_symlink():
        raise RecfunnelError(f"{flag} {shown} is a symbolic link; give the real folder or {fix}")
    try:
        exists = target.exists()
        if exists and not target.is_dir():
            raise RecfunnelError(f"{flag} {shown} exists and is not a folder; {fix}")
        clean_stale(target)
        if exists and any(target.iterdir()):
            problem = _problem(target)
            if problem is not None:
                reason, overwritable = problem
                if not (overwrite and overwritable):
                    hint = f"pass --overwrite to replace it, or {fix}" if overwritable else fix
                    if reason.startswith("it holds files"):
                        hint = f"move those files out of it, or {fix}"
                    raise RecfunnelError(f"will not replace {flag} {shown}: {reason}; {hint}")
    except OSError as exc:
        raise RecfunnelError(
            f"cannot look into {flag} {shown}: {exc.strerror or exc}; {fix}"
        ) from None
    _probe_writable(target, flag, fix)


def _probe_writable(target: Path, flag: str, fix: str) -> None:
    """Create and remove an empty sibling folder where the run will be written (``os.access``
    is not enough: root passes it on a read-only file system)."""
    base = _nearest_existing(target.parent)
    if not base.is_dir():
        raise RecfunnelError(f"cannot write {flag} {target}: {base} is not a folder; {fix}")
    probe = base / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.mkdir(probe)
    except OSError as exc:
        raise RecfunnelError(
            f"cannot write {flag} {target}: {exc.strerror or exc} in {base}; {fix}"
        ) from None
    os.rmdir(probe)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); ``False`` where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]  # fmt: skip
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _remove_replaced(folder: Path, target: Path) -> None:
    """Delete a replaced run: only its run files, then the folder. Anything else that appeared
    in it meanwhile is kept, in a visible sibling folder ``NAME.kept-PID``."""
    from recfunnel.runs import FILES

    names = set(FILES) | {MANIFEST}
    with contextlib.suppress(OSError, ValueError):
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if isinstance(manifest, dict):
            names |= {str(n) for n in manifest}
    for name in names:
        entry = folder / name
        if "/" not in name and _plain(entry):
            entry.unlink()
    try:
        os.rmdir(folder)
    except OSError:
        kept = target.parent / f"{target.name}.kept-{os.getpid()}"
        os.rename(folder, kept)
        import warnings

        warnings.warn(f"files added to {target} while training were kept in {kept}", stacklevel=3)


@contextlib.contextmanager
def atomic_dir(target: str | Path, *, overwrite: bool = False):
    """Yield a new temporary folder; when the block succeeds it replaces ``target`` atomically.

    ``target`` is checked with :func:`check_replaceable` both before and after the block (a
    user may have put files into it meanwhile). On error the temporary folder is removed and
    ``target`` is untouched.
    """
    target = Path(target)
    check_replaceable(target, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    os.mkdir(tmp)  # 0777 & ~umask, unlike tempfile.mkdtemp's 0700
    replaced = None  # the folder holding the previous run once the new one is in place
    try:
        yield tmp
        _fsync_dir(tmp)
        check_replaceable(target, overwrite=overwrite)
        if not target.exists():
            os.rename(tmp, target)
        elif _exchange(tmp, target):
            replaced = tmp
        else:
            old = _sibling(target, "old")
            os.rename(target, old)
            try:
                os.rename(tmp, target)  # killed just before this: clean_stale puts `old` back
            except BaseException:
                os.rename(old, target)
                raise
            replaced = old
        _fsync_dir(target.parent)
    except BaseException:
        if replaced is None and os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if replaced is not None:
        _remove_replaced(replaced, target)
