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
