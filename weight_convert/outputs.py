"""The files a conversion writes: their names (``output_paths``), whether they may be written
(``check_outputs``, ``check_writable``: before anything is read) and how they are written
(``atomic``).

``atomic`` writes the files into a staging folder beside the outputs,
``.weight-convert-PID-XXXXXXXX.partial``, which holds a ``lock`` file its run keeps locked
(``flock``) for as long as it lives, then publishes them without clobbering: each staged file
is hard-linked to its output name, which fails if anything took that name meanwhile, and a
multi-file output (Keras) is published whole or not at all. A failure, Ctrl-C or SIGTERM (any
``BaseException``) removes the staging folder and the parent folders the run created. A
``kill -9`` leaves its staging folder; the next run writing into that directory removes it,
since the kernel released its lock when its run died (``remove_abandoned``).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from weight_convert import signals
from weight_convert.errors import (
    OutputExistsError,
    OutputNotWritableError,
    UsageError,
    first_line,
)

try:
    import fcntl
except ImportError:  # no flock (Windows): staging folders are never taken for abandoned
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "OUTPUT_SUFFIXES",
    "STAGING_PREFIX",
    "STAGING_SUFFIX",
    "HUGGINGFACE",
    "TORCH_SUFFIXES",
    "atomic",
    "check_not_source",
    "check_outputs",
    "check_writable",
    "huggingface_paths",
    "output_paths",
    "remove_abandoned",
]

#: target framework -> files written, by suffix (torch: the default; see ``TORCH_SUFFIXES``)
OUTPUT_SUFFIXES = {
    "keras": (".keras", ".weights.h5"),
    "flax": (".safetensors",),
    "torch": (".pth",),
}
#: PyTorch checkpoint files ``--to torch`` writes, by the suffix of ``-o``: ``torch.save``'s zip
#: for .pth / .pt / .bin, safetensors for .safetensors, a pickle of NumPy arrays as model zoos
#: ship them for .pkl (layouts whose releases are such pickles only)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".pkl")
#: a staging folder is ``STAGING_PREFIX + "PID-XXXXXXXX" + STAGING_SUFFIX``
STAGING_PREFIX, STAGING_SUFFIX = ".weight-convert-", ".partial"
#: the file in a staging folder its run holds locked while it lives
LOCK_NAME = "lock"
#: errors of ``os.link`` on file systems without hard links
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


def _strip(name: str, suffixes: Sequence[str]) -> str:
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def output_paths(source: str | Path, target: str, output: str | Path | None) -> list[Path]:
    """Files for ``target``. Keras / Flax: ``output`` with its known suffix removed, or the
    source's stem in the current directory (``STEM_keras``), plus each of the target's suffixes.
    torch: ``output`` as it is when it ends in one of ``TORCH_SUFFIXES``, else ``output`` (default
    ``./STEM_torch``) plus ``.pth``. flax: ``output`` as it is when it ends in ``.msgpack``.

    An ``output`` that is there and is not a regular file (``/dev/null``, a FIFO, a directory) is
    refused (``OutputNotWritableError``): the files would land beside it under names nobody
    asked for (``/dev/null.pth``). So is an ``output`` that names a directory by its spelling
    (a trailing separator, ``.`` or ``..`` last: ``out/``), whether or not it is there: it
    would be ``out.pth``, beside the folder."""
    if output is None:
        stem = _strip(Path(source).name, (*TORCH_SUFFIXES, ".keras", ".weights.h5", ".msgpack"))
        base = Path.cwd() / f"{stem}_{target}"
    else:
        _refuse_directory_name(output)
        base = Path(output)
        _refuse_special(base, follow_symlinks=True)
        if target == "torch" and base.name.endswith(TORCH_SUFFIXES):
            return [base]
        if target == "flax" and base.name.endswith(".msgpack"):
            return [base]
        if target != "torch":
            base = base.with_name(_strip(base.name, OUTPUT_SUFFIXES[target]))
    return [base.with_name(base.name + suffix) for suffix in OUTPUT_SUFFIXES[target]]


#: the layout written as a Hugging Face model directory (``-o`` names the directory)
HUGGINGFACE = "huggingface"


def huggingface_paths(source: str | Path, output: str | Path | None) -> list[Path]:
    """The files of a Hugging Face model directory, ``model.safetensors`` and ``config.json``,
    in ``output`` (default ``./STEM_huggingface``), which may exist as a directory; anything
    else there is refused (``OutputNotWritableError``)."""
    if output is None:
        stem = _strip(Path(source).name, (*TORCH_SUFFIXES, ".keras", ".weights.h5", ".msgpack"))
        directory = Path.cwd() / f"{stem}_{HUGGINGFACE}"
    else:
        directory = Path(output)
        if os.path.lexists(directory) and not directory.is_dir():
            raise OutputNotWritableError(
                f"cannot write {output}: --layout huggingface writes a directory (config.json, "
                "model.safetensors) and this is not one"
            )
    return [directory / "model.safetensors", directory / "config.json"]


def _refuse_directory_name(output: str | Path) -> None:
    """``OutputNotWritableError`` for an ``output`` spelled as a directory: ``out/``, ``out/.``,
    ``..``, the empty string (``Path`` drops a trailing separator, so the string is looked at)."""
    text = os.fspath(output)
    if os.path.basename(text) in ("", ".", ".."):
        raise OutputNotWritableError(
            f"cannot write {text!r}: it names a directory; -o takes a file name "
            f"(e.g. {os.path.join(text, 'NAME')})"
        )


def _refuse_special(path: Path, follow_symlinks: bool = False) -> None:
    """``OutputNotWritableError`` when ``path`` is there and is neither a regular file nor
    (``follow_symlinks`` False) a symbolic link."""
    try:
        mode = os.stat(path, follow_symlinks=follow_symlinks).st_mode
    except OSError:  # not there (or a dangling link, followed): nothing in the way
        return
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
    }
    kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
    raise OutputNotWritableError(f"cannot write {path}: it is {kind}, not a regular file")


def check_outputs(paths: Sequence[Path], replace: bool = False) -> None:
    """Refuse output names that are taken: by anything but a regular file or a symbolic link (a
    directory, a device: ``OutputNotWritableError``, even when ``replace``), or by anything at
    all, a dangling symbolic link too, unless ``replace`` (``OutputExistsError``)."""
    for path in paths:
        _refuse_special(Path(path))
    existing = [str(p) for p in paths if os.path.lexists(p)]
    if existing and not replace:
        raise OutputExistsError(f"output exists: {', '.join(existing)} (use --force to replace)")


def check_not_source(paths: Sequence[Path], source: str | Path) -> None:
    """``UsageError`` when an output is the source file itself (the same file: by its name, a
    symbolic link or a hard link), ``--force`` or not: replacing it while it is read (and read
    again by ``--verify``) would leave neither the source nor a sound output."""
    for path in paths:
        try:
            same = os.path.samefile(source, path)
        except (OSError, ValueError):  # either is not there (yet): not the same file
            continue
        if same:
            raise UsageError(
                f"the output {path} is the source file {source} itself: write it elsewhere "
                "(-o), then move it over the source if that is what you want"
            )


def check_writable(paths: Sequence[Path]) -> None:
    """Raise ``OutputNotWritableError`` unless the outputs' directory exists and can be written
    or can be created (checked before anything is read)."""
    directory = Path(paths[0]).parent.absolute()
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputNotWritableError(f"cannot write {paths[0]}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputNotWritableError(f"cannot write {paths[0]}: {probe} is not writable")


# --------------------------------------------------------------------------- staging folders


def _make_parents(directory: Path, created: list[Path]) -> None:
    """Create ``directory`` and its missing parents, appending to ``created`` (outermost first)
    the folders this call made (not those another process made meanwhile)."""
    missing = []
    probe = directory.absolute()
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:
            continue
        except OSError as e:
            raise OutputNotWritableError(f"cannot write into {directory}: {e.strerror}") from None
        created.append(folder)


def _remove_created(created: list[Path]) -> None:
    """Remove the folders ``_make_parents`` made, deepest first, those left empty only."""
    for folder in reversed(created):
        try:
            os.rmdir(folder)
        except OSError:
            pass


def _lock(folder: Path) -> int | None:
    """Create ``folder/lock`` held with ``flock`` (the descriptor: closing it releases the lock),
    or None where the file system has no ``flock``. The lock file is locked under another name
    and then renamed: a ``lock`` file is locked from its first moment on."""
    if fcntl is None:
        return None
    pending = folder / f".{LOCK_NAME}-pending"
    fd = os.open(pending, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # no flock here: the folder will never look abandoned
        os.close(fd)
        return None
    os.rename(pending, folder / LOCK_NAME)
    return fd


@contextmanager
def _staging(directory: Path) -> Iterator[Path]:
    """A new locked staging folder in ``directory``, removed on the way out whatever happens."""
    prefix = f"{STAGING_PREFIX}{os.getpid()}-"
    folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=STAGING_SUFFIX, dir=directory))
    lock = None
    try:
        lock = _lock(folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if lock is not None:
            os.close(lock)


def _abandoned(folder: Path) -> bool:
    """True when the run that made the staging ``folder`` is gone: its lock can be taken. A
    folder without a lock (its run was killed before locking, or no ``flock`` here) is kept."""
    if fcntl is None:
        return False
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its run is alive
        return False
    finally:
        os.close(fd)
    return True


def remove_abandoned(directory: Path) -> list[Path]:
    """Remove the staging folders in ``directory`` that runs killed without cleanup left (their
    lock is free: the kernel releases a ``flock`` when its holder dies); those removed."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    removed = []
    for entry in entries:
        name = entry.name
        if not (name.startswith(STAGING_PREFIX) and name.endswith(STAGING_SUFFIX)):
            continue
        if entry.is_dir(follow_symlinks=False) and _abandoned(Path(entry.path)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


# --------------------------------------------------------------------------- publishing


def _taken(path: Path) -> OutputExistsError:
    return OutputExistsError(
        f"output exists: {path} (it appeared during the conversion; use --force to replace)"
    )


def _remove_if_same(path: Path, mine: os.stat_result) -> None:
    """Unlink ``path`` if it is still the file ``mine`` describes (not one put there since)."""
    try:
        if os.path.samestat(os.lstat(path), mine):
            os.unlink(path)
    except OSError:
        pass


def _link_new(staged: Path, path: Path) -> None:
    """Give ``staged`` the name ``path`` unless that name is taken (``OutputExistsError``), in
    one step: a hard link; where the file system has none, an exclusive reservation of the
    name, then a rename over the reservation."""
    try:
        os.link(staged, path)
        return
    except FileExistsError:
        raise _taken(path) from None
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise _taken(path) from None
    reserved = os.fstat(fd)
    os.close(fd)
    try:
        os.replace(staged, path)
    except BaseException:
        _remove_if_same(path, reserved)
        raise


def _publish(
    staged: Sequence[Path],
    paths: Sequence[Path],
    replace: bool,
    published: list[tuple[Path, os.stat_result]],
) -> None:
    """Give each staged file its output name: all of them or none (those published are removed
    again when a later one fails). Without ``replace`` a name taken meanwhile is refused.
    ``published`` (empty on the way in) holds the outputs published: all of them once this
    returns, none when it raised."""
    try:
        for src, dst in zip(staged, paths, strict=True):
            mine = os.stat(src)
            if replace:
                check_outputs([dst], replace=True)
                os.replace(src, dst)
            else:
                _link_new(src, dst)
            published.append((dst, mine))
        signals.check()  # a signal came while publishing, its exception swallowed: none stay
    except BaseException:
        for dst, mine in reversed(published):
            _remove_if_same(dst, mine)
        published.clear()
        raise


def atomic(
    paths: list[Path], write: Callable[[list[Path]], None], *, replace: bool = False
) -> None:
    """``write`` the files into a new staging folder beside the outputs (first removing those
    killed runs left, ``remove_abandoned``), then publish them under the output names: all or
    none, and a name taken meanwhile is refused (``OutputExistsError``) unless ``replace``.
    Whatever stops it (an error, Ctrl-C, SIGTERM) leaves no staged file and none of the parent
    folders it created. A signal whose exception was swallowed (``signals.check``) stops it
    before publishing; the files published are recorded (``signals.published``): a signal that
    comes later keeps them, and its line names them. An ``OSError`` on the way is an
    ``OutputNotWritableError``."""
    directory = paths[0].parent
    created: list[Path] = []
    published: list[tuple[Path, os.stat_result]] = []
    try:
        _make_parents(directory, created)
        remove_abandoned(directory)
        with _staging(directory) as folder:
            staged = [folder / p.name for p in paths]
            write(staged)
            signals.check()  # before anything is published (or, with replace, replaced)
            _publish(staged, paths, replace, published)
    except (OutputExistsError, OutputNotWritableError):
        raise
    except OSError as e:
        raise OutputNotWritableError(
            f"cannot write {paths[0]}: {e.strerror or first_line(e)}"
        ) from None
    finally:
        if published:
            signals.published(paths)
        else:
            _remove_created(created)
