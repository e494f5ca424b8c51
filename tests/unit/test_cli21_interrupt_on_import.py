"""A Ctrl-C in the first second of a command, while numpy or torch imports, was a traceback: numpy turns
the interrupt into "ImportError: cannot load module more than once per process" (or an AttributeError);
and one while this module imported tqdm was a bare KeyboardInterrupt traceback."""

from __future__ import annotations

import contextlib
import signal

import pytest

from metarec_dist import cli


def _interrupted_import(args):
    with contextlib.suppress(KeyboardInterrupt):  # swallowed inside the module's import, as numpy's
        signal.raise_signal(signal.SIGINT)  # Ctrl-C, taken by the handler in force
    raise ImportError("cannot load module more than once per process")


def test_an_interrupt_that_comes_out_as_another_error_is_said_as_an_interrupt(monkeypatch, capsys):
    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setitem(cli.COMMANDS, "print-config", _interrupted_import)
    assert cli.main(["print-config"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert signal.getsignal(signal.SIGINT) is before  # put back


def test_the_same_error_without_an_interrupt_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise ImportError("a broken install")

    monkeypatch.setitem(cli.COMMANDS, "print-config", broken)
    with pytest.raises(ImportError, match="a broken install"):
        cli.main(["print-config"])


# rt23: a Ctrl-C in the first ~0.2 s of a command, while ``metarec_dist.cli`` imported its modules or
# while ``main`` built the parser (before ``_main``'s own handling), was a KeyboardInterrupt traceback.

# The child imports the CLI with a Ctrl-C delivered while it imports metarec_dist.config, then runs it.
_CTRL_C_WHILE_IMPORTING = """
import builtins, os, runpy, signal, sys
real = builtins.__import__
def importing(name, *args, **kwargs):
    if name == "metarec_dist.config":
        os.kill(os.getpid(), signal.SIGINT)
    return real(name, *args, **kwargs)
builtins.__import__ = importing
sys.argv = ["metarec", "print-config"]
runpy.run_module("metarec_dist.cli", run_name="__main__")
"""


def _child_env():
    import os
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}


def test_a_ctrl_c_while_the_cli_imports_is_one_line_and_status_130():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_WHILE_IMPORTING], env=_child_env(), capture_output=True, text=True
    )
    assert "Traceback" not in done.stderr
    assert (done.returncode, done.stderr) == (130, "interrupted\n")


def test_a_ctrl_c_while_main_builds_the_parser_is_one_line(monkeypatch, capsys):
    def interrupted_parser():
        signal.raise_signal(signal.SIGINT)  # main's handler in force: a KeyboardInterrupt here
        pytest.fail("no KeyboardInterrupt")

    monkeypatch.setattr(cli, "build_parser", interrupted_parser)
    try:
        status = cli.main(["print-config"])
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C came out of main as a KeyboardInterrupt (a traceback)")
    assert status == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_importing_the_cli_keeps_the_importers_ctrl_c_handler():
    import subprocess
    import sys

    code = (
        "import signal; before = signal.getsignal(signal.SIGINT); import metarec_dist.cli; "
        "assert signal.getsignal(signal.SIGINT) is before, signal.getsignal(signal.SIGINT)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=_child_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_ctrl_c_right_after_start_is_never_a_traceback():
    """A real Ctrl-C as soon as the process exists, a few times. ``-S`` (no ``site``, its packages on
    PYTHONPATH instead): a Ctrl-C inside CPython's own start (site's imports) is Python's to print.
    Killed by the signal before Python handles it (-SIGINT, nothing printed) or one line and 130."""
    import subprocess
    import sys
    import sysconfig

    env = _child_env()
    env["PYTHONPATH"] += f":{sysconfig.get_paths()['purelib']}"
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-S", "-m", "metarec_dist.cli", "print-config"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
        assert "Traceback" not in err
        assert (child.returncode, err) in ((130, "interrupted\n"), (-signal.SIGINT, ""))
