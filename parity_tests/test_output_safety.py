"""Outputs are never clobbered, never left half-written, and a stopped run stops cleanly: a file
that appears at an output name during the conversion is kept (exit 15) unless ``--force``; a
dangling symbolic link counts as an output; a device, FIFO or directory (or an ``-o`` spelled
as one, ``out/``) is never written to or beside; an output that is the source file itself is
refused before anything is read; a Keras pair is published whole or not at all; a failure
removes the folders the run created; Ctrl-C and SIGTERM print one line and leave nothing (130 /
143; more in ``test_signals.py``); a ``kill -9`` leaves its staging folder, which the next run
removes once its lock shows the run is dead (and a live run's is kept). Error lines stay one
short line whatever the keys hold (``inspect`` too)."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import checkpoint_factory as factory
import pytest
import torch
from bad_files import nan_weight, official_state, save

from weight_convert import cli, errors, outputs, writers
from zoo.registry import FAMILIES

SMALL_SWIN = dataclasses.asdict(FAMILIES["swin"].tiny)
STAGING = f"{outputs.STAGING_PREFIX}*{outputs.STAGING_SUFFIX}"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """The small official Swin ``.pth``, and the same as a PyTorch ``.safetensors`` (read in a
    subprocess without importing any framework)."""
    root = tmp_path_factory.mktemp("good")
    pth = Path(factory.official_swin2d(root / "swin.pth", seed=0, **SMALL_SWIN)[0])
    st = root / "swin.safetensors"
    assert cli.main(["convert", str(pth), "--to", "torch", "-o", str(st)]) == 0
    return {"pth": pth, "safetensors": st}


def convert(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["convert", *map(str, argv)])
    _, err = capsys.readouterr()
    return code, err


def one_error_line(err: str, code: int, expected: int) -> None:
    assert code == expected, err
    assert err.startswith("weight-convert: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def entries(directory: Path) -> list[str]:
    """Every entry under ``directory``, hidden ones, links and folders included."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def write_then(monkeypatch, name: str, after) -> None:
    """Run ``after(staged path)`` once ``writers.<name>`` has written its file."""
    original = getattr(writers, name)

    def hooked(out, *args, **kwargs):
        original(out, *args, **kwargs)
        after(Path(out))

    monkeypatch.setattr(writers, name, hooked)


# --------------------------------------------------------------------------- no clobbering


@pytest.mark.parametrize("force", [False, True], ids=["kept", "--force replaces"])
def test_output_that_appears_meanwhile(force, good, tmp_path, monkeypatch, capsys):
    target = tmp_path / "m.safetensors"
    write_then(monkeypatch, "_stream_safetensors", lambda _: target.write_bytes(b"intruder"))
    flags = ["--force"] if force else []
    code, err = convert(capsys, good["pth"], "--to", "torch", "-o", target, *flags)
    assert entries(tmp_path) == ["m.safetensors"], "a staging folder was left"
    if force:
        assert code == 0, err
        assert target.read_bytes()[8:9] == b"{", "not the converted safetensors file"
        return
    one_error_line(err, code, errors.OutputExistsError.exit_code)
    assert "appeared during the conversion" in err and "--force" in err
    assert target.read_bytes() == b"intruder"


def test_dangling_symlink_is_an_output(good, tmp_path, capsys):
    target = tmp_path / "m.safetensors"
    target.symlink_to(tmp_path / "nowhere")
    code, err = convert(capsys, good["pth"], "--to", "torch", "-o", target)
    one_error_line(err, code, errors.OutputExistsError.exit_code)
    assert "appeared" not in err, "refused only at the end, not before reading"
    assert os.readlink(target) == str(tmp_path / "nowhere")
    assert entries(tmp_path) == ["m.safetensors"]


def test_keras_pair_is_published_whole_or_not_at_all(good, tmp_path, monkeypatch, capsys):
    """The second of the two names is taken while converting: the first is not left alone."""
    from weight_convert import port_files

    stem = tmp_path / "m"
    original = port_files.write_config_attr

    def then_taken(path, config):
        original(path, config)
        (tmp_path / "m.weights.h5").write_bytes(b"intruder")

    monkeypatch.setattr(port_files, "write_config_attr", then_taken)
    code, err = convert(capsys, good["pth"], "--to", "keras", "-o", stem)
    one_error_line(err, code, errors.OutputExistsError.exit_code)
    assert "m.weights.h5" in err
    assert entries(tmp_path) == ["m.weights.h5"], "m.keras was published alone"
    assert (tmp_path / "m.weights.h5").read_bytes() == b"intruder"


@pytest.mark.parametrize("force", [False, True], ids=["", "--force"])
@pytest.mark.parametrize("kind", ["/dev/null", "fifo", "directory", "directory as output"])
def test_not_a_regular_file(kind, force, good, tmp_path, capsys):
    """Never written to, nor beside under a made-up name (``/dev/null.pth``)."""
    if kind == "/dev/null":
        output = Path("/dev/null")
    elif kind == "fifo":
        output = tmp_path / "fifo"
        os.mkfifo(output)
    elif kind == "directory":
        output = tmp_path / "folder"
        output.mkdir()
    else:  # the output's own name is a directory
        output = tmp_path / "m.safetensors"
        output.mkdir()
    before = entries(tmp_path)
    flags = ["--force"] if force else []
    code, err = convert(capsys, good["pth"], "--to", "torch", "-o", output, *flags)
    one_error_line(err, code, errors.OutputNotWritableError.exit_code)
    assert "not a regular file" in err
    assert entries(tmp_path) == before
    assert not Path("/dev/null.pth").exists()


@pytest.mark.parametrize("force", [False, True], ids=["", "--force"])
@pytest.mark.parametrize("how", ["same path", "other spelling", "symlink", "hard link", "flax"])
def test_output_that_is_the_source(how, force, good, tmp_path, capsys):
    """Refused before anything is read, ``--force`` or not (without it the line must not
    suggest ``--force``): the source is kept byte for byte and nothing else appears. (Before,
    ``--force --verify`` replaced the source, then blamed it for failing its CRC check; a Flax
    source gave a traceback.)"""
    source = tmp_path / "s.safetensors"
    if how == "flax":
        assert cli.main(["convert", str(good["pth"]), "--to", "flax", "-o", str(source)]) == 0
        capsys.readouterr()
    else:
        source.write_bytes(good["safetensors"].read_bytes())
    output = {
        "other spelling": tmp_path / "sub" / ".." / "s.safetensors",
        "symlink": tmp_path / "link.safetensors",
        "hard link": tmp_path / "hard.safetensors",
    }.get(how, source)
    if how == "other spelling":
        (tmp_path / "sub").mkdir()
    elif how == "symlink":
        output.symlink_to(source)
    elif how == "hard link":
        os.link(source, output)
    before, content = entries(tmp_path), source.read_bytes()
    flags = ["--force"] if force else []
    code, err = convert(capsys, source, "--to", "torch", "-o", output, "--verify", *flags)
    one_error_line(err, code, errors.UsageError.exit_code)
    assert "is the source file" in err and "--force" not in err, err
    assert source.read_bytes() == content and entries(tmp_path) == before


@pytest.mark.parametrize("target", ["torch", "keras"])
@pytest.mark.parametrize("output", ["folder/", "new/", "folder/.", "new/..", ""])
def test_output_spelled_as_a_directory(output, target, good, tmp_path, capsys, monkeypatch):
    """``-o folder/`` names a directory, there or not: refused (exit 16), not written as
    ``folder.pth`` beside it, and no folder is made."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    code, err = convert(capsys, good["pth"], "--to", target, "-o", output, "--force")
    one_error_line(err, code, errors.OutputNotWritableError.exit_code)
    assert "names a directory" in err, err
    assert entries(tmp_path) == ["folder"]


def test_no_hard_links_still_no_clobbering(tmp_path, monkeypatch):
    """Where ``os.link`` is refused (file systems without hard links) the name is reserved
    exclusively before the rename: published when free, refused when taken."""

    def no_links(src, dst, *args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "a.bin"
    outputs.atomic([out], lambda staged: staged[0].write_bytes(b"new"))
    assert out.read_bytes() == b"new"
    with pytest.raises(errors.OutputExistsError):
        outputs.atomic([out], lambda staged: staged[0].write_bytes(b"newer"))
    assert out.read_bytes() == b"new" and entries(tmp_path) == ["a.bin"]


# --------------------------------------------------------------------------- failures clean up


def test_failure_removes_the_folders_it_created(good, tmp_path, capsys):
    (tmp_path / "kept").mkdir()
    source = nan_weight(good, tmp_path)
    before = entries(tmp_path)
    out = tmp_path / "kept" / "new" / "deeper" / "m.safetensors"
    code, err = convert(capsys, source, "--to", "torch", "-o", out)
    one_error_line(err, code, errors.NonFiniteError.exit_code)
    assert entries(tmp_path) == before


@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_ctrl_c_is_one_line_and_leaves_nothing(command, good, tmp_path, monkeypatch, capsys):
    """KeyboardInterrupt anywhere in any command: exit 130, one line, no staged file and no
    created folder (the cleanup runs for BaseException too)."""
    from weight_convert import checkpoints

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if command == "convert":
        write_then(monkeypatch, "_stream_safetensors", interrupt)
        argv = ["convert", good["pth"], "--to", "torch", "-o", tmp_path / "new" / "m.safetensors"]
    else:
        monkeypatch.setattr(checkpoints, "open_state_dict", interrupt)
        argv = ["inspect", good["pth"]]
    handler = signal.getsignal(signal.SIGTERM)
    try:
        code = cli.main(list(map(str, argv)))
    except KeyboardInterrupt:  # would stop the test session
        pytest.fail("KeyboardInterrupt escaped cli.main")
    _, err = capsys.readouterr()
    one_error_line(err, code, 128 + signal.SIGINT)
    assert err == "weight-convert: interrupted (SIGINT)\n"
    assert entries(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is handler, "SIGTERM's handler not put back"


# --------------------------------------------------------------------------- messages


@pytest.fixture(scope="module")
def hostile_keys(good, tmp_path_factory) -> Path:
    """The good checkpoint plus twelve unexpected 100,000-character keys (the eight a message
    lists, cut, still make a line beyond the cap) and one holding a newline and a terminal
    escape."""
    sd = official_state(good["pth"])
    sd["!evil\nkey\x1b[2J" + "e" * 200] = torch.zeros(2)  # listed first, in either order
    for i in range(12):
        sd[f"{i:02d}" + "k" * 99_998] = torch.zeros(2)
    return save(tmp_path_factory.mktemp("keys") / "keys.pth", sd)


@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_error_line_is_short_and_one_line(command, hostile_keys, tmp_path, capsys):
    argv = [command, str(hostile_keys)]
    if command == "convert":
        argv += ["--to", "torch", "-o", str(tmp_path / "m.safetensors")]
    code = cli.main(argv)
    _, err = capsys.readouterr()
    if command == "inspect" and code == 0:
        pytest.fail("inspect took a checkpoint with unexpected keys")
    assert code == errors.UnexpectedKeysError.exit_code, err[:300]
    assert err.count("\n") == 1 and len(err) < 1200, (len(err), err[:300])
    assert (
        "!evil key\\x1b[2J" in err and "\x1b" not in err and "k" * 98 + "...(99900 more)" in err
    ), "keys not cut at 100"
    capped = len("weight-convert: ") + errors.LINE_CHARS + len("...(99999 more)\n")
    assert len(err) <= capped and err.endswith("more)\n"), "line not capped"
    assert entries(tmp_path) == []


# --------------------------------------------------------------------------- signals

#: ``weight-convert`` with every tensor written slowly: a signal lands mid-write
SLOW_RUNNER = """
import signal, sys, time
from weight_convert import cli, writers

signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the parent ignores it
call = writers.Tensors.__call__
writers.Tensors.__call__ = lambda self, key, value: (time.sleep(0.3), call(self, key, value))[1]
sys.exit(cli.main(sys.argv[1:]))
"""


def start_slow(good, tmp_path: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """A conversion into ``out`` in a subprocess, and its staging folder once it holds the
    staged file (the run is then writing)."""
    runner = tmp_path / "runner.py"
    runner.write_text(SLOW_RUNNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path])}
    argv = ["convert", str(good["safetensors"]), "--to", "torch", "-o", str(out)]
    proc = subprocess.Popen(
        [sys.executable, str(runner), *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        staged = list(out.parent.glob(f"{STAGING}/{out.name}"))
        if staged:
            return proc, staged[0].parent
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"the conversion never staged its file: {proc.communicate()}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_write(signum, good, tmp_path):
    out = tmp_path / "out" / "new" / "m.safetensors"
    proc, _ = start_slow(good, tmp_path, out)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    word = "interrupted" if signum == signal.SIGINT else "terminated"
    assert err == f"weight-convert: {word} ({signal.Signals(signum).name})\n", err
    assert entries(tmp_path) == ["runner.py"], "staged files or created folders were left"


def test_killed_run_is_cleaned_by_the_next(good, tmp_path, capsys):
    out_dir = tmp_path / "out"
    proc, killed = start_slow(good, tmp_path, out_dir / "m.safetensors")
    proc.kill()
    proc.communicate(timeout=30)
    assert killed.is_dir() and (killed / outputs.LOCK_NAME).exists(), "nothing to clean up"
    assert killed.name.startswith(f"{outputs.STAGING_PREFIX}{proc.pid}-")

    live = out_dir / f"{outputs.STAGING_PREFIX}1-live{outputs.STAGING_SUFFIX}"  # another run's
    live.mkdir()
    fd = os.open(live / outputs.LOCK_NAME, os.O_CREAT | os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, err = convert(capsys, good["safetensors"], "--to", "torch", "-o", out_dir / "a.pth")
        assert code == 0, err
        assert not killed.exists(), "the killed run's staging folder was kept"
        assert live.is_dir(), "a live run's staging folder was removed"
    finally:
        os.close(fd)  # the live run dies: its folder is abandoned now
    code, err = convert(capsys, good["safetensors"], "--to", "torch", "-o", out_dir / "b.pth")
    assert code == 0, err
    assert entries(out_dir) == ["a.pth", "b.pth"]
