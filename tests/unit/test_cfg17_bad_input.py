"""Bad configuration input: each mistake is one ``error:`` line naming the file, key or flag, status 2.

Every shipped config must pass the CLI's own checks (``print-config`` runs them: the algorithm's options,
a first stage's file) and give DeepSpeed a consistent config.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from metarec_dist.cli import main
from metarec_dist.config import Setting, load_config, read_yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(ROOT.joinpath("configs").glob("*.yaml"))
TINY = str(ROOT / "configs" / "tiny.yaml")


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The stderr of ``metarec argv``, which must fail as a user mistake: one ``error:`` line, status 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_passes_the_cli_checks_and_gives_deepspeed_a_config(path, capsys):
    from metarec_dist.runtime.deepspeed_engine import deepspeed_config

    assert main(["print-config", "--config", str(path)]) == 0, capsys.readouterr().err
    cfg = load_config(path)
    ds = deepspeed_config(cfg.optim, cfg.runtime, cfg.tasks_per_worker, cfg.runtime.num_workers)
    assert ds["train_batch_size"] == cfg.meta.meta_batch_size


@pytest.mark.parametrize("override", sorted(ROOT.joinpath("configs", "deepspeed").glob("*.json")))
def test_shipped_deepspeed_overrides_merge(override):
    from metarec_dist.runtime.deepspeed_engine import deepspeed_config

    cfg = load_config(
        TINY, ["runtime.deepspeed=true", "runtime.zero_stage=3", f"runtime.deepspeed_override={override}"]
    )
    assert deepspeed_config(cfg.optim, cfg.runtime, cfg.tasks_per_worker, 1)["zero_optimization"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # PyYAML keeps the last of two equal keys without a word: the first value is silently lost.
        (
            "model:\n  hidden_size: 32\n  hidden_size: 64\n",
            r"model\.hidden_size is given twice \(lines 2 and 3\)",
        ),
        ("model:\n  hidden_size: 32\nmodel:\n  num_layers: 1\n", r"model is given twice \(lines 1 and 3\)"),
        ("model: {hidden_size: 32, hidden_size: 64}\n", r"model\.hidden_size is given twice \(line 1\)"),
        (
            "data:\n  item_features:\n    - {name: a, kind: token, kind: title}\n",
            r"data\.item_features\[0\]\.kind is given twice",
        ),
        ("model:\n\thidden_size: 32\n", r"line 2, column 1: not valid YAML: .*indents with spaces, not tabs"),
        ("model: {hidden_size: 32\n", r"line \d+, column \d+: not valid YAML: while parsing a flow mapping"),
        ("", r"has no settings \(empty or comments only\); write \{\} for defaults"),
        ("# all commented out\n", r"has no settings"),
        ("- model\n- train\n", r"the top level must be a mapping of sections .*got a list"),
    ],
)
def test_yaml_mistakes_are_one_line_naming_the_file_and_line(tmp_path, capsys, text, said):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    err = _error(capsys, ["print-config", "--config", str(p)])
    assert re.search(rf"^error: config file {re.escape(str(p))}: {said}", err), err


def test_a_merge_key_may_be_overridden_and_an_empty_mapping_means_the_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  <<: {hidden_size: 32, num_layers: 1}\n  hidden_size: 64\n")
    assert (load_config(p).model.hidden_size, load_config(p).model.num_layers) == (64, 1)
    p.write_text("{}\n")
    assert load_config(p).model.hidden_size == 64


def test_a_folder_or_a_file_that_is_not_utf8_is_named(tmp_path, capsys):
    err = _error(capsys, ["print-config", "--config", str(tmp_path)])
    assert f"config file {tmp_path}: is a folder; give a YAML file" in err
    p = tmp_path / "latin1.yaml"
    p.write_bytes("model:\n  arch: gpt2 # \xe9\n".encode("latin-1"))
    err = _error(capsys, ["print-config", "--config", str(p)])
    assert f"config file {p}: not UTF-8 text (byte 0xe9 at offset 22); save it as UTF-8" in err
    with pytest.raises(ValueError, match="config file not found"):
        read_yaml(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("train.eval_every=-1", r"train\.eval_every must be >= 0, got -1"),
        ("train.eval_users=0", r"train\.eval_users must be >= 1"),
        ("train.seed=-1", r"train\.seed must be an integer in \[0, 4294967295\]"),
        ("data.seed=-3", r"data\.seed must be an integer in \[0, 4294967295\]"),
        ("optim.warmup_steps=-5", r"optim\.warmup_steps must be >= 0"),
        ("optim.weight_decay=-0.1", r"optim\.weight_decay must be >= 0"),
        ("optim.eps=-1e-8", r"optim\.eps must be >= 0"),
        ("optim.grad_clip=-1", r"optim\.grad_clip must be >= 0"),
        ("optim.betas=[0.9, 1.5]", r"optim\.betas must both be in \[0, 1\)"),
        ("model.intermediate_size=0", r"model\.intermediate_size must be >= 1"),
        ("model.num_negatives=0", r"model\.num_negatives must be >= 1"),
        ("model.init_std=-0.02", r"model\.init_std must be a number > 0"),
        ("runtime.torch_threads=-1", r"runtime\.torch_threads must be >= 0"),
        ("runtime.gpus_per_worker=-1", r"runtime\.gpus_per_worker must be >= 0"),
        ("runtime.reduce_bucket_size=0", r"runtime\.reduce_bucket_size must be >= 1"),
        ("checkpoint.keep=0", r"checkpoint\.keep must be >= 1, got 0"),
        ("checkpoint.every=-1", r"checkpoint\.every must be >= 0, got -1"),
        ("eval.batch_users=0", r"eval\.batch_users must be >= 1"),
        ("eval.num_relevant=-1", r"eval\.num_relevant must be >= 1"),
        ("eval.n_boot=0", r"eval\.n_boot must be >= 1"),
        ("eval.ks=[0]", r"eval\.ks must be a non-empty list of positive cut-offs"),
    ],
)
def test_a_value_out_of_range_fails_at_load_naming_the_key(setting, said):
    """These passed the config and failed later (numpy's seed, torch's optimizer or thread count, the
    bootstrap) naming no key, or ran silently wrong (a negative eval_every, zero relevant items)."""
    with pytest.raises(ValueError, match=rf"^--set {re.escape(setting)}: {said}"):
        load_config(TINY, [setting])


def test_a_null_or_a_quoted_number_says_what_to_write(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("meta:\n  algorithm:\ntrain:\n  meta_steps: 10\n")
    with pytest.raises(ValueError, match=r"meta\.algorithm: has no value \(null\); give a string, or leave"):
        load_config(p)
    # PyYAML (YAML 1.1) reads 1e3 and 1e-3 (no dot) as strings: a float takes it, an int says what to write
    p.write_text("optim:\n  lr: 1e-3\nmeta:\n  inner_lr: 5E-1\ntrain:\n  meta_steps: 1e3\n")
    with pytest.raises(ValueError, match=r"train\.meta_steps: expected int, got str '1e3'; write .*: 1000$"):
        load_config(p)
    p.write_text("optim:\n  lr: 1e-3\nmeta:\n  inner_lr: 5E-1\n")
    cfg = load_config(p)
    assert (cfg.optim.lr, cfg.meta.inner_lr) == (pytest.approx(1e-3), pytest.approx(0.5))


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("=3", r"--set '=3': no key before '='"),
        ("eval.shots[0]=1", r"a list is set whole, not by index: e\.g\. --set eval\.shots=\[1,3,5\]"),
        ("model..x=1", r"empty part in the key 'model\.\.x'"),
        ("model.adapters=[lowrank, film", r"--set model\.adapters: line 1, column \d+: not valid YAML"),
        # the unknown key is model.foo; the file does not have it: the --set is named, not the file
        ("model.foo.bar=3", r"--set model\.foo\.bar=3: unknown config key\(s\): model\.foo;"),
        (
            "model.hidden_sise=3",
            r"unknown config key\(s\): model\.hidden_sise; .*did you mean hidden_size\?$",
        ),
        ("model.hidden_size.x=3", r"--set model\.hidden_size\.x=3: model\.hidden_size is 64, not a section"),
        ("model=3", r"--set model=3: expected a mapping of keys, got int"),
        ("eval.shots=1,3", r"--set eval\.shots=1,3: expected a list, got '1,3'; write the list as \[1, 3\]$"),
    ],
)
def test_set_mistakes_name_the_set(capsys, setting, said):
    err = _error(capsys, ["print-config", "--config", TINY, "--set", setting])
    assert re.search(said, err) and "tiny.yaml" not in err, err


def test_an_unknown_algorithm_names_where_it_was_chosen(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("meta:\n  algorithm: fomal\n")
    err = _error(capsys, ["print-config", "--config", str(p)])
    assert err.startswith(f"error: {p}: meta.algorithm: unknown 'fomal'; choose from ['fomaml',"), err
    err = _error(capsys, ["print-config", "--config", TINY, "--set", "meta.algorithm=mamll"])
    assert err.startswith("error: --set meta.algorithm=mamll: unknown 'mamll'; choose from"), err


def test_data_stats_flags_are_named_and_a_path_is_not_yaml(tmp_path, capsys):
    """`metarec data stats --path X` applied X as `--set data.path=X`: the YAML parse cut a path at " #",
    read `yes` as true, and errors named a `--set` the user never typed."""
    folder = tmp_path / "run #2"
    folder.mkdir()
    err = _error(capsys, ["data", "stats", "--path", str(folder / "missing.csv")])
    assert f"{folder / 'missing.csv'} not found" in err, err
    err = _error(capsys, ["data", "stats", "--path", str(folder), "--format", "xml"])
    assert err.startswith("error: --format xml: unknown 'xml'; choose one of auto,") and "--set" not in err, (
        err
    )
    err = _error(capsys, ["data", "stats", "--path", ""])
    assert err == "error: --path: empty; give a data file or folder"
    err = _error(capsys, ["data", "stats", "--format", "csv"])  # ignored without --path: synthetic data shown
    assert err.startswith("error: --format csv: only with --path"), err
    cfg = load_config(
        None, [Setting("data.path", "yes", "--path"), Setting("data.format", "csv", "--format")]
    )
    assert cfg.data.path == "yes"


def test_a_programs_setting_is_blamed_on_its_origin_even_with_a_config_file():
    with pytest.raises(ValueError, match=r"^reproduce --seeds -1: train\.seed must be an integer in \[0, "):
        load_config(TINY, [Setting("train.seed", -1, "reproduce --seeds")])
    # a mistake elsewhere is still the file's or the user's
    with pytest.raises(ValueError, match=r"^--set eval\.ks=0: expected a list"):
        load_config(TINY, [Setting("train.seed", 1, "reproduce --seeds"), "eval.ks=0"])


def test_version_comes_from_the_package_metadata(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"metarec {version('metarec-dist')}"


def test_unquoted_yes_or_a_number_for_text_says_to_quote_it(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("logging:\n  project: no\n")
    with pytest.raises(
        ValueError, match=r"logging\.project: expected str, got bool False; .*quote the text$"
    ):
        load_config(p)
    p.write_text("runtime:\n  run_name: 2024\n")
    with pytest.raises(
        ValueError, match=r"runtime\.run_name: expected str, got int 2024; quote it .*'2024'$"
    ):
        load_config(p)
    p.write_text("logging:\n  wandb: off\ncheckpoint:\n  resume: no\n")  # a choice or a bool: as meant
    cfg = load_config(p)
    assert (cfg.logging.wandb, cfg.checkpoint.resume) == ("off", False)


def test_a_missing_deepspeed_override_names_the_set_or_the_file(tmp_path, capsys):
    base = ["print-config", "--config", TINY, "--set", "runtime.deepspeed=true"]
    err = _error(capsys, [*base, "--set", "runtime.deepspeed_override=nope.json"])
    assert err.startswith(
        f"error: --set runtime.deepspeed_override=nope.json: file not found next to {TINY} "
        f"({ROOT / 'configs' / 'nope.json'}) nor in the current folder ({Path.cwd() / 'nope.json'}); give "
    )
    p = tmp_path / "c.yaml"
    p.write_text("runtime:\n  deepspeed: true\n  deepspeed_override: nope.json\n")
    err = _error(capsys, ["print-config", "--config", str(p)])
    assert err.startswith(f"error: runtime.deepspeed_override nope.json: file not found next to {p} "), err


@pytest.mark.timeout(60)
def test_nested_aliases_and_deep_nesting_fail_fast(tmp_path):
    """The duplicate-key check walks the YAML node graph: shared (aliased) nodes must be walked once, else
    9 levels of 10 aliases ("billion laughs") take 10^9 steps. Deep nesting overflowed PyYAML's recursion."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    p = tmp_path / "c.yaml"
    p.write_text("\n".join(levels) + "\n")
    with pytest.raises(ValueError, match=r"unknown config key\(s\): a0, a1"):
        load_config(p)
    p.write_text("model: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ValueError, match=r"c\.yaml: nested too deeply to read$"):
        load_config(p)


def test_a_misspelt_config_file_gets_a_suggestion_and_a_null_section_takes_a_set(tmp_path, capsys):
    err = _error(capsys, ["print-config", "--config", str(ROOT / "configs" / "tiy.yaml")])
    assert err.endswith(f"; did you mean {ROOT / 'configs' / 'tiny.yaml'}?"), err
    p = tmp_path / "c.yaml"
    p.write_text("model:\ntrain:\n  meta_steps: 3\n")  # `model:` with nothing under it: an empty section
    assert load_config(p, ["model.hidden_size=32"]).model.hidden_size == 32
    err = _error(capsys, ["print-config", "--config", TINY, "--set", "train.pretrain=nope.yaml"])
    # the --set says the key and value once: "--set train.pretrain=nope.yaml: train.pretrain nope.yaml:"
    assert err.startswith("error: --set train.pretrain=nope.yaml: config file not found next to "), err


def test_reading_every_shipped_config_and_a_bad_one_imports_no_torch():
    """The file reader (duplicate-key check, one-line YAML errors) stays plain data: no torch."""
    code = (
        "import sys, glob; from metarec_dist.config import load_config\n"
        "for p in sorted(glob.glob('configs/*.yaml')): load_config(p)\n"
        "try: load_config('configs/tiny.yaml', ['model.foo.bar=1'])\n"
        "except ValueError as e: print(e)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'metarec_dist.meta') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert (
        lines[0].startswith("--set model.foo.bar=1: unknown config key(s): model.foo;") and lines[1] == "[]"
    )
