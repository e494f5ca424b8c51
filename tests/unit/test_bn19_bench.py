"""`metarec bench` user pass (session 19): what a benchmark leaves behind when it is interrupted."""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from metarec_dist.bench import serve_bench

REPO = Path(__file__).resolve().parents[2]


def test_ctrl_c_while_the_server_starts_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `metarec serve` child runs in its own session (the terminal's SIGINT never reaches it): a Ctrl-C
    while the bench waits for it to come up must stop it, not leave it (and its Ray cluster) running."""
    started: list[subprocess.Popen] = []
    popen = subprocess.Popen

    def never_up(cmd: list[str], **kwargs: object) -> subprocess.Popen:  # a server that never answers
        proc = popen([sys.executable, "-c", "import time; time.sleep(120)"], **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(serve_bench.subprocess, "Popen", never_up)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            serve_bench.start_server("unused", serve_bench.free_port(), timeout_s=60)
    finally:
        timer.cancel()
        left = [p for p in started if p.poll() is None]
        for p in left:  # never leave the stand-in behind, even when the test fails
            p.kill()
            p.wait()
    assert len(started) == 1
    assert not left, "the server child was left running after Ctrl-C"


def test_data_bench_module_says_a_too_small_log_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m metarec_dist.bench.data_bench --interactions 0` printed a DataError traceback naming a
    temporary Parquet file; now the flag and its least value, as `metarec bench data` says it."""
    from metarec_dist.bench import data_bench

    with pytest.raises(SystemExit) as exit_info:
        data_bench.main(["--interactions", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--interactions must be >= 1000, got 0" in err and "Traceback" not in err


def test_sampled_part_is_the_tiny_config_wherever_it_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """docs/benchmarks.md: the sampled part runs tiny-config meta-steps. It read configs/tiny.yaml from the
    working directory, so outside the repository it silently ran the defaults' model (64 tokens)."""
    from metarec_dist.bench.scale import sampled_config
    from metarec_dist.config import load_config

    overrides = ["model.loss=sampled", "train.meta_steps=16", "train.timing_warmup=4"]
    overrides += ["train.log_every=16", "train.eval_every=0", "logging.wandb=off"]
    tiny = load_config(str(REPO / "configs" / "tiny.yaml"), overrides)
    monkeypatch.chdir(tmp_path)
    assert sampled_config(16) == tiny
    assert sampled_config(16).model.max_seq_len == 32 and sampled_config(16).meta.meta_batch_size == 64


def _documented_bench_commands() -> list[list[str]]:
    """Every `metarec bench ...` command line of docs/benchmarks.md, placeholders filled in."""
    # a command continued on the next line (a backslash at its end) is read whole; "[--opt V]": optional
    text = re.sub(r"\\\n\s*", " ", (REPO / "docs" / "benchmarks.md").read_text())
    commands = []
    for line in re.findall(r"metarec bench [^`#\n]*", text):
        line = line.replace("[--set ...]", "").replace("[", "").replace("]", "")
        words = shlex.split(line.replace(" C ", " 4 ").replace(" R", " 1"))
        if len(words) > 3:  # not a mention in prose ("metarec bench", "`metarec bench serve`'s `_post`")
            commands.append(words[1:])
    return commands


def test_every_documented_bench_command_parses() -> None:
    from metarec_dist.cli import build_parser

    commands = _documented_bench_commands()
    assert {c[1] for c in commands} >= {"meta-step", "system", "data", "scale", "serve", "eval"}
    for argv in commands:
        if argv[-1] == "--parts":  # the doc's sentence goes on on the next line
            continue
        args = build_parser().parse_args(argv)  # an option the CLI lost exits with status 2
        assert args.bench == argv[1]


def test_meta_step_says_its_data_is_synthetic(caplog: pytest.LogCaptureFixture) -> None:
    """`bench meta-step` always times generated sequences of data.synthetic_items items; with a config that
    names a real log it said nothing and its result did not record the catalogue size it ran."""
    from metarec_dist.bench.meta_step import run_meta_step_bench
    from metarec_dist.config import load_config

    small = ["model.hidden_size=16", "model.num_heads=2", "meta.meta_batch_size=2", "data.synthetic_items=50"]
    cfg = load_config(str(REPO / "configs" / "tiny.yaml"), [*small, "data.format=csv", "data.path=log.csv"])
    with caplog.at_level(logging.WARNING, logger="metarec"):
        result = run_meta_step_bench(cfg, repeats=1, loop_repeats=1)
    assert result["data"] == "synthetic" and result["num_items"] == 50 and result["tasks"] == 2
    assert any("data.format=csv is not read" in r.getMessage() for r in caplog.records)


def test_system_bench_stops_its_ray_cluster_when_the_ray_run_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Ray side failing (or a Ctrl-C in it) left the cluster the bench started running in the caller's
    process: `shutdown_ray` was only reached after a successful run."""
    from metarec_dist import data
    from metarec_dist.bench.system import run_system_bench
    from metarec_dist.config import load_config
    from metarec_dist.runtime import ray_launcher
    from metarec_dist.train import trainer

    class Trainer:
        def __init__(self, *args: object) -> None:
            pass

        def fit(self) -> dict[str, float]:
            return {"tasks_per_s": 1.0}

    class Prepared:
        def user_splits(self) -> None:
            return None

    def ray_fails(cfg: object) -> dict[str, float]:
        raise KeyboardInterrupt

    stopped: list[bool] = []
    monkeypatch.setattr(trainer, "MetaTrainer", Trainer)
    monkeypatch.setattr(data, "prepare_data", lambda cfg: Prepared())
    monkeypatch.setattr(ray_launcher, "train_on_ray", ray_fails)
    monkeypatch.setattr(ray_launcher, "shutdown_ray", lambda: stopped.append(True))
    with pytest.raises(KeyboardInterrupt):
        run_system_bench(load_config(str(REPO / "configs" / "tiny.yaml")), steps=4)
    assert stopped == [True]


def test_serve_bench_histories_fit_a_small_catalogue() -> None:
    """A catalogue under 10 items failed the whole bench with numpy's "Cannot take a larger sample than
    population"; the histories are now at most the catalogue, distinct items each, lengths otherwise kept."""
    small = serve_bench._histories(["a", "b", "c", "d"], 8, seed=0)
    assert [len(h) for h in small] == [1, 3, 4, 4, 1, 3, 4, 4]
    assert all(len(set(h)) == len(h) for h in small)
    big = serve_bench._histories([str(i) for i in range(50)], 4, seed=0)
    assert [len(h) for h in big] == list(serve_bench.LENGTHS)


def test_scale_data_ratio_is_none_when_the_data_adds_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`metarec bench scale --parts data --interactions 1000` (the smallest N) printed
    rank_data_ratio_2_vs_1 = -1816406250.0 and counted it as a target met: the memory the data adds was
    noise below the 20k-interaction reference run, divided by max(..., 1e-9)."""
    from metarec_dist.bench import scale

    peaks = {"base": 563.1, "1x": 561.2, "10x": 561.3}  # the user pass's worker peaks (MiB)

    def child(part: str, log: str, workers: int, **kwargs: object) -> dict[str, float]:
        role = Path(log).stem.removeprefix("log-")
        return {"worker_peak_mb": peaks[role] + (0.3 if workers == 1 and role == "base" else 0.0)} | {
            "driver_peak_mb": 428.0
        }

    monkeypatch.setattr(scale, "_child", child)
    out = scale.run_data(1000, tmp_path)
    assert out["rank_data_mb_10x"] < 0 and out["rank_data_ratio_2_vs_1"] is None
    assert scale._data_ratio(60.0, 120.0) == 0.5  # a measurable size still divides


def test_scale_targets_leave_out_a_ratio_that_was_not_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    from metarec_dist.bench import scale

    measured = {"rank_data_ratio_2_vs_1": None, "driver_peak_ratio_10x_vs_1x": 1.0}
    monkeypatch.setattr(scale, "run_data", lambda interactions, tmp: dict(measured))
    out = scale.run_scale_bench(1000, 1, ("data",))
    assert out["targets_met"] == {"driver_peak_ratio_10x_vs_1x": True}


def test_atomic_writes_get_plain_file_permissions(tmp_path):
    """JSON results, manifests and records written atomically were owner-only (mkstemp's 0600) where a plain
    write gives the umask's mode; a replaced file keeps its own."""
    import os
    import stat

    from metarec_dist.checkpoint import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
        assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
        (tmp_path / "r.json").chmod(0o640)
        atomic_write_text(tmp_path / "r.json", "{}\n")
        assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_eval_bench_protocol_flag_reaches_the_bench(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """grid23: `metarec bench eval --protocol` (either spelling, as `metarec evaluate --protocol`) is the
    bench's ``protocol_name``; the default stays cold_start."""
    import metarec_dist.bench.eval_bench as eval_bench
    from metarec_dist.cli import main

    seen = []
    monkeypatch.setattr(eval_bench, "run_eval_bench", lambda *a, **kw: seen.append(kw) or {"ok": 1})
    for flag in (["--protocol", "new_items"], ["--protocol", "new-items"], ["--protocol", "loo"], []):
        assert main(["bench", "eval", "--items", "50", *flag]) == 0
    assert [kw["protocol_name"] for kw in seen] == ["new-items", "new-items", "loo", "cold_start"]
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "eval", "--protocol", "warm"])
    assert exit_.value.code == 2
    assert "invalid choice: 'warm'" in capsys.readouterr().err
