"""SIGINT and SIGTERM stop a conversion in one line wherever they land (``weight_convert.signals``),
each run in a subprocess that signals itself at a chosen moment, in a chosen way:

- ``direct``: the handler's exception surfaces where it is raised;
- ``gc`` / ``del``: it is raised inside a garbage-collector callback (as in JAX's
  ``_xla_gc_callback``) or a ``__del__``, where Python prints "Exception ignored" and drops it;
- ``wrap``: code catching ``BaseException`` turns it into a ``ValueError`` (as Keras'
  ``load_model`` does with every failure while loading, ``--verify`` included).

The run must still stop, and say why: exit 130 / 143, one line, nothing published.

Once the outputs are published (during ``--verify``) a signal keeps them, complete, and the line
names them; a signal during the cleanup of an interrupted run changes nothing; one after the run
reported its result (interpreter teardown) leaves that result. All conversions here are a
PyTorch ``.safetensors`` to ``.pth`` (no framework imported: about a second each)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import checkpoint_factory as factory
import pytest

from weight_convert import checkpoints, cli
from zoo.registry import FAMILIES

SMALL_SWIN = dataclasses.asdict(FAMILIES["swin"].tiny)

#: ``weight-convert`` that signals itself: PLAN is HOW:SIGNAL:WHEN (see ``run``)
RUNNER = """
import atexit, gc, os, signal, sys, time
from weight_convert import cli, outputs, verification, writers

signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the parent ignores it
how, name, when = os.environ["PLAN"].split(":")
signum = getattr(signal, "SIG" + name)
landed, after = False, []  # tensors written once the signal came
atexit.register(lambda: open("after.txt", "w").write(str(len(after))))


def send():
    os.kill(os.getpid(), signum)
    time.sleep(5)  # the handler runs here, and raises here


def land():
    global landed
    landed = True
    if how == "direct":
        send()
    elif how == "gc":
        def callback(phase, info):
            gc.callbacks.remove(callback)
            send()
        gc.callbacks.append(callback)
        gc.collect()
    elif how == "wrap":  # code that makes any failure its own error (Keras' load_model)
        try:
            send()
        except BaseException as e:
            raise ValueError("1 object could not be loaded") from e
    elif how == "del":
        class Dying:
            def __del__(self):
                send()
        Dying()


def once(function, before=False):
    def hooked(*args, **kwargs):
        if not hooked.done:
            hooked.done = True
            if before:
                land()
            else:
                result = function(*args, **kwargs)
                land()
                return result
        return function(*args, **kwargs)
    hooked.done = False
    return hooked


tensor = writers.Tensors.__call__
writers.Tensors.__call__ = lambda *args: (landed and after.append(1), tensor(*args))[1]
if when == "write":  # after the first tensor is written, before publishing
    writers.Tensors.__call__ = once(writers.Tensors.__call__)
elif when == "written":  # the staged files are complete, not published
    writers.write_pth = once(writers.write_pth)
elif when == "inspect":  # `inspect` has read the checkpoint
    from weight_convert import checkpoints
    checkpoints.open_state_dict = once(checkpoints.open_state_dict)
elif when == "link":  # while publishing: the output is linked, not yet reported published
    outputs._link_new = once(outputs._link_new)
elif when == "published":  # between publishing and removing the staging folder
    outputs._publish = once(outputs._publish)
elif when == "verify":  # the outputs are published
    verification.verify_torch = once(verification.verify_torch, before=True)
elif when == "cleanup":  # SIGTERM mid-write, then this signal while the staged files go
    writers.Tensors.__call__ = once(writers.Tensors.__call__)
    signum, second = signal.SIGTERM, signum
    rmtree = outputs.shutil.rmtree
    def rmtree_signalled(*args, **kwargs):
        os.kill(os.getpid(), second)
        time.sleep(0.2)
        rmtree(*args, **kwargs)
    outputs.shutil.rmtree = rmtree_signalled
if when == "teardown":  # after main returned its result
    from weight_convert import signals
    atexit.register(lambda: (os.kill(os.getpid(), signum), time.sleep(0.5)))
    signals.exit_after_run(cli.main(sys.argv[1:]))
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("source")
    pth = Path(factory.official_swin2d(root / "swin.pth", seed=0, **SMALL_SWIN)[0])
    st = root / "swin.safetensors"
    assert cli.main(["convert", str(pth), "--to", "torch", "-o", str(st)]) == 0
    return st


def run(
    source: Path, tmp_path: Path, plan: str, *flags: str, existing: bytes | None = None
) -> tuple[int, str, list[str]]:
    """Convert ``source`` to ``tmp_path/out/m.pth`` (holding ``existing`` first, if given) in a
    subprocess following ``plan``; its exit code, its stderr and what is left in
    ``tmp_path/out``."""
    (tmp_path / "runner.py").write_text(RUNNER)
    (tmp_path / "out").mkdir()
    if existing is not None:
        (tmp_path / "out" / "m.pth").write_bytes(existing)
    env = {
        **os.environ,
        "PLAN": plan,
        "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path]),
    }
    argv = ["convert", str(source), "--to", "torch", "-o", str(tmp_path / "out" / "m.pth")]
    if plan.endswith(":inspect"):
        argv = ["inspect", str(source)]
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "runner.py"), *argv, *flags],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    (tmp_path / "stdout.txt").write_text(proc.stdout)
    return proc.returncode, proc.stderr, left


def stopped_line(signum: int) -> str:
    word = "interrupted" if signum == signal.SIGINT else "terminated"
    return f"weight-convert: {word} ({signal.Signals(signum).name})"


SIGNUMS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM}


@pytest.mark.parametrize(
    "plan",
    [
        "direct:TERM:write",
        "gc:TERM:write",
        "del:INT:write",
        "wrap:INT:write",
        "gc:INT:link",
        "del:TERM:link",
    ],
)
def test_signal_before_the_run_is_done_publishes_nothing(plan, source, tmp_path):
    """Wherever the handler's exception goes, the run stops before publishing (or takes back
    what it published: the signal came while publishing)."""
    signum = SIGNUMS[plan.split(":")[1]]
    code, err, left = run(source, tmp_path, plan)
    assert code == 128 + signum, err
    assert err == stopped_line(signum) + "\n", err
    assert left == [], "outputs published after the signal, or staged files left"
    written = int((tmp_path / "after.txt").read_text())
    assert written == 0, f"{written} tensors written after the signal: not stopped at once"


def test_signal_swallowed_in_another_command(source, tmp_path):
    """Not only ``convert``: every command ends with a look at the signals received."""
    code, err, _ = run(source, tmp_path, "gc:TERM:inspect")
    assert (code, err) == (143, stopped_line(signal.SIGTERM) + "\n"), err


@pytest.mark.parametrize("plan", ["gc:TERM:written", "del:INT:written"])
def test_signal_before_publishing_keeps_the_file_force_would_replace(plan, source, tmp_path):
    """With ``--force`` the output replaces a file: a signal swallowed before publishing must
    stop the run before that file is replaced, not after (when it could only be removed)."""
    signum = SIGNUMS[plan.split(":")[1]]
    code, err, left = run(source, tmp_path, plan, "--force", existing=b"old")
    assert (code, err) == (128 + signum, stopped_line(signum) + "\n"), err
    assert left == ["m.pth"] and (tmp_path / "out" / "m.pth").read_bytes() == b"old"


@pytest.mark.parametrize("second", ["INT", "TERM"])
def test_second_signal_during_cleanup(second, source, tmp_path):
    """SIGTERM mid-write, then ``second`` while the staging folder is removed: one line for the
    first signal, no traceback, nothing left."""
    code, err, left = run(source, tmp_path, f"direct:{second}:cleanup")
    assert code == 128 + signal.SIGTERM, err
    assert err == stopped_line(signal.SIGTERM) + "\n", err
    assert left == []


@pytest.mark.parametrize(
    "plan",
    [
        "direct:INT:verify",
        "gc:TERM:verify",
        "del:INT:verify",
        "wrap:TERM:verify",
        "direct:INT:published",
        "gc:TERM:published",
    ],
)
def test_signal_after_publishing_keeps_the_outputs_and_says_so(plan, source, tmp_path):
    """Once the outputs are published (the staging folder still to remove, or ``--verify``
    running) a signal leaves them, complete, names them in its one line, and the exit code is
    still the signal's. No summary is printed: the run did not finish."""
    signum = SIGNUMS[plan.split(":")[1]]
    verify = plan.endswith(":verify")
    code, err, left = run(source, tmp_path, plan, *(["--verify"] if verify else []))
    assert code == 128 + signum, err
    out = tmp_path / "out" / "m.pth"
    assert err.count("\n") == 1 and err.startswith(stopped_line(signum)), err
    assert f"kept, complete: {out}" in err, err
    assert ("--verify did not finish" in err) == verify, err
    assert (tmp_path / "stdout.txt").read_text() == "", "a summary for an interrupted run"
    assert left == ["m.pth"]
    state, _ = checkpoints.open_state_dict(str(out))
    assert len(state) > 0


@pytest.mark.parametrize("name", ["INT", "TERM"])
def test_signal_at_teardown_keeps_the_result(name, source, tmp_path):
    """After ``main`` returned (its lines printed), a signal during the interpreter's teardown
    changes nothing: the exit code is the run's own and nothing more is printed."""
    code, err, left = run(source, tmp_path, f"direct:{name}:teardown")
    assert (code, err) == (0, ""), err
    assert left == ["m.pth"]
