"""Every code block of the READMEs runs as written (or is checked, with the reason why not).

The blocks are read from the Markdown files at test time, so editing a README
changes what is tested. What happens to each block:

- `bash` blocks: every `kflow ...` command is parsed by the real CLI parser
  (`kflow.cli.main.build_parser`) and checked: the recipe, YAML file or
  run directory it names exists, every `--set KEY=VALUE` and `--search NAME=...`
  is a hyperparameter of that recipe with a valid value (the YAML and `--set`
  values go through `kflow.recipe.overrides.resolve_recipe`). The commands in
  `EXECUTED` are then run, in document order, from a scratch copy of the
  repository root (symlinks to the tracked top-level entries; `runs/`,
  `exports/` and the files the blocks write land there), by the real
  `kflow.cli.main.main` in one process so that TensorFlow is imported once.
  A command may get extra arguments only through `SHORTENED`, which says why.
  Every other `kflow` command must be listed in `CHECKED_ONLY` with the reason
  it is not run: a new command in a README fails `test_every_kflow_command_is_classified`
  until someone decides.
- `kflow serve exports` is run for real (a free port on 127.0.0.1 instead of
  8501: the only change made to the served blocks), and the `curl` commands,
  the Python client block and `python serving/client.py ...` are sent to it.
- `python` blocks are compiled; all of them are executed (the serving client
  block against the live server).
- `yaml` blocks whose first line is `# NAME.yaml` are written to NAME in the
  scratch root and loaded with `resolve_recipe`; columns they name must exist.
- Directory trees are compared with what the executed commands wrote (or with
  the repository, for the layout); the two transcripts are checked by
  `test_error_transcript` and `test_quickstart_transcript`.
- `docker`, `pip install` and `./quickstart.sh` are not run (no Docker, no
  network, and the quick start would install and run the whole suite): the
  files and options they name are checked.

The slow part (training three 1-epoch runs and the 1-epoch tabular run,
exports with TFLite, two servers) takes about two minutes on two busy cores.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from docs_blocks import Block, Command, commands, extract_blocks, kflow_names, walk_tree  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# READMEs whose blocks run, in the order a reader follows them: serving/ and
# tflite/ continue from the README's runs/digits-cnn (their prose says so).
READMES = ["README.md", "serving/README.md", "tflite/README.md", "recipes/lecture/README.md"]
# READMEs whose kflow commands are only parsed: kflow/serve/README.md is the
# server's design document, owned with the server code (its placeholders
# `runs/digits-cnn-1a2b3c4d`, `image`, `batch` are not meant to run).
PARSE_ONLY_READMES = ["kflow/serve/README.md"]

# Where each README's blocks run: "a" is the scratch root of README.md (and
# tflite/README.md, which continues from its export), "b" a second scratch root
# for serving/README.md, which starts with nothing exported (its version
# numbers are 1 and 2) and a copy of runs/digits-cnn.
WORKSPACE = {"README.md": "a", "tflite/README.md": "a", "serving/README.md": "b",
             "recipes/lecture/README.md": "a"}
# Run directories a README uses without training them itself, as its prose says.
PREREQUISITE_RUNS = {"serving/README.md": {"runs/digits-cnn"},
                     "tflite/README.md": {"runs/digits-cnn"}}

# kflow commands that are run: (README, command) -> extra arguments appended.
EXECUTED: dict[tuple[str, str], list[str]] = {
    ("README.md", "kflow recipes"): [],
    ("README.md", "kflow recipes show digits-cnn"): [],
    ("README.md", "kflow train digits-cnn --run-dir runs/digits-cnn"): ["--set", "epochs=1"],
    ("README.md", "kflow doctor runs/digits-cnn"): [],
    ("README.md", "kflow report runs/digits-cnn"): [],
    ("README.md", "kflow train digits-cnn --set dropout=0.5 --run-dir runs/digits-cnn-dropout"):
        ["--set", "epochs=1"],
    ("README.md", "kflow compare runs/digits-cnn runs/digits-cnn-dropout -o compare.html"): [],
    ("README.md", "kflow lr-find digits-cnn"): [],
    ("README.md", "kflow train students.yaml"): ["--set", "epochs=1"],
    ("README.md", "kflow export runs/digits-cnn --tflite all"): [],
    ("serving/README.md", "kflow export runs/digits-cnn"): [],
    ("serving/README.md",
     "kflow train recipes/example_tabular/example.yaml --run-dir runs/students"):
        ["--set", "epochs=1"],
    ("serving/README.md", "kflow export runs/students --name students"): [],
}
# Why a command above runs with extra arguments (nothing else may change a command).
SHORTENED = {
    ("README.md", "kflow train digits-cnn --run-dir runs/digits-cnn"):
        "trains up to 50 epochs (~1 min); one epoch makes the same files",
    ("README.md", "kflow train digits-cnn --set dropout=0.5 --run-dir runs/digits-cnn-dropout"):
        "a second full training; one epoch is enough to compare two runs",
    ("README.md", "kflow train students.yaml"):
        "trains up to 100 epochs; one epoch proves the YAML, file and columns work",
    ("serving/README.md",
     "kflow train recipes/example_tabular/example.yaml --run-dir runs/students"):
        "trains up to 60 epochs; the export and server need only a finished run",
}
# kflow commands that are parsed and checked but not run, and why.
CHECKED_ONLY = {
    ("README.md", "kflow train experiment.yaml"):
        "20 epochs of digits-cnn; the YAML is loaded and validated, and the same "
        "engine runs for runs/digits-cnn",
    ("README.md", "kflow train digits-cnn --set dropout=0.3 --set optimizer.learning_rate=3e-4 "
                  "--epochs 10"):
        "10 epochs; the --set keys and values are validated by resolve_recipe",
    ("README.md", "kflow train digits-mlp --set batch_size=full --set optimizer=sgd "
                  "--set learning_rate=0.5"):
        "a full training; the --set keys and values are validated by resolve_recipe",
    ("README.md", "kflow train recipes/example_tabular/example.yaml"):
        "the same config is trained (1 epoch) by serving/README.md as runs/students",
    ("README.md", "kflow cv breast-cancer-mlp --folds 5"): "five trainings",
    ("README.md", "kflow tune digits-mlp --tuner hyperband --max-epochs 9"):
        "a search of many trainings",
    ("README.md", "kflow tune digits-cnn --tuner random --max-trials 20 --search "
                  "dropout=0.0:0.5 --search optimizer=adam,sgd,rmsprop --search "
                  "learning_rate=1e-4:1e-2:log --cv 5"):
        "100 trainings; the --search names are checked against the recipe",
    ("README.md", "kflow train breast-cancer-mlp --set class_weight=balanced "
                  "--set label_smoothing=0.1"):
        "a full training; tests/test_training_features.py checks both settings' effect",
    ("README.md", "kflow train digits-mlp --set lr_schedule=plateau --set plateau_patience=3 "
                  "--set decay_rate=0.5"):
        "a full training; tests/test_training_features.py checks the plateau schedule",
    ("README.md", "kflow train digits-cnn --set ema=true --set grad_accumulation=4 "
                  "--profile-steps 10:20"):
        "a full training; tests/test_training_features.py checks EMA, accumulation, profile",
    ("README.md", "kflow train digits-transfer"):
        "a pretraining and a 60-epoch training; tests/test_transfer.py and "
        "tests/test_shipped_recipes.py train it shortened",
    ("README.md", "kflow train digits-transfer --set backbone=none"):
        "a full training; tests/test_transfer.py trains it shortened against the transfer run",
    ("README.md", "kflow train digits-cnn --set backbone=runs/digits-pretrain-1a2b3c4d "
                  "--set freeze_epochs=5"):
        "names a placeholder run; tests/test_transfer.py trains from a run directory",
    ("README.md", "kflow train images --set path=photos/ --set backbone=MobileNetV3Small "
                  "--set backbone_weights=mobilenet_v3_small_notop.h5 --set freeze_epochs=5"):
        "needs photos and a weights file; tests/test_transfer.py builds MobileNetV3Small "
        "from a weights file it writes",
    ("README.md", "kflow train digits-cnn --set backbone=presets/resnet_18 "
                  "--set freeze_epochs=5"):
        "names a placeholder preset folder; tests/test_transfer_hub.py trains from a KerasHub "
        "preset folder it writes",
    ("README.md", "kflow train images --set path=photos/ --set image_size=64"):
        "needs a folder of photos; tests/test_streaming_recipes.py trains it on generated "
        "images from the CLI",
    ("README.md", "kflow train tfds --set name=mnist --set split=train[:10%]"):
        "downloads MNIST; tests/test_streaming_recipes.py trains it on tfds.testing.mock_data",
    ("README.md", "kflow train breast-cancer-mlp --track mlflow"):
        "writes ./mlruns; tests/test_tracking_mlflow.py logs a run to a file store and reads "
        "it back",
    ("README.md", "kflow tune digits-mlp --max-trials 5 --track mlflow"):
        "five trainings; tests/test_tracking_mlflow.py checks the nested runs",
    ("README.md", "kflow train runs/tune-digits-mlp-hyperband-*/best.yaml"):
        "needs the search above; the glob is checked against the tuning directory's "
        "default name",
    ("README.md", "kflow train digits-mlp --workers 2 --epochs 3"):
        "two TensorFlow processes; tests/test_distributed.py runs this command and checks "
        "the run directory, the weights of both workers and the accuracy",
    ("README.md", "kflow train digits-cnn --strategy multi_worker"):
        "needs the other worker of its TF_CONFIG; tests/test_distributed.py trains 2 workers "
        "from TF_CONFIG and from a simulated SLURM step",
    ("README.md", "kflow train digits-cnn --precision mixed_bfloat16 --set jit_compile=true"):
        "a full training; tests/test_accelerator.py trains digits-cnn in bfloat16",
    ("README.md", "kflow train digits-cnn --deterministic"):
        "a full training; tests/test_accelerator.py checks config.yaml records the flag",
}
SERVED = {("README.md", "kflow serve exports")}
# The transcript of a mistake: run, exit status and message compared.
ERROR_TRANSCRIPT_PREFIX = "$ kflow "
QUICKSTART_TRANSCRIPT_PREFIX = "kflow: training digits-cnn in "
# Entries of the run-directory tree that a finished run does not have.
UNFINISHED_ONLY = {"runs/digits-cnn/backup/"}
# Names the README lists after "From Python: `kflow.data.load_table`" without the prefix.
BARE_DATA_NAMES = ["kflow.data.load_arrays", "kflow.data.load_sklearn",
                   "kflow.data.load_image_folder", "kflow.data.load_tfds"]


# ----------------------------------------------------------------------------- blocks


def _blocks(readmes=READMES) -> list[Block]:
    return [b for r in readmes for b in extract_blocks(ROOT / r, ROOT)]


def _commands(readmes=READMES, program: str | None = None) -> list[Command]:
    cmds = [c for b in _blocks(readmes) if b.lang == "bash" for c in commands(b)]
    return [c for c in cmds if program is None or (c.argv and c.argv[0] == program)]


def _ckey(c: Command) -> tuple[str, str]:
    return (c.block.readme, c.key)


def _is_tree(b: Block) -> bool:
    return b.lang == "" and re.match(r"^[\w.\-/]+/(\s|$)", b.first_line) is not None


def _yaml_name(b: Block) -> str | None:
    m = re.match(r"^#\s*([\w.\-]+\.ya?ml)\b", b.first_line)
    return m.group(1) if m else None


def _make_workspace(path: Path) -> Path:
    """A scratch repository root: symlinks to the tracked top-level entries."""
    path.mkdir(parents=True, exist_ok=True)
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    names = {line.split("/")[0] for line in tracked.stdout.splitlines()} if tracked.returncode \
        == 0 else {"kflow", "recipes", "serving", "tflite", "benchmarks", "tests",
                   "quickstart.sh", "setup.cfg", "pyproject.toml", "constraints.txt"}
    for name in sorted(names):
        if (ROOT / name).exists() and not (path / name).exists():
            (path / name).symlink_to(ROOT / name)
    for b in _blocks():
        name = _yaml_name(b)
        if name:
            (path / name).write_text(b.text + "\n")
    return path


@pytest.fixture(scope="module")
def static_ws(tmp_path_factory) -> Path:
    return _make_workspace(tmp_path_factory.mktemp("docs_static"))


def _parser():
    from kflow.cli.main import build_parser

    return build_parser()


def _parse(argv: list[str]) -> argparse.Namespace:
    try:
        return _parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`kflow {' '.join(argv)}` does not parse (exit {exc.code})") \
            from None


# ------------------------------------------------------------------------ fast checks


def test_every_readme_is_covered():
    """A README added to the repository gets its blocks tested (or a reason not to)."""
    tracked = subprocess.run(["git", "ls-files", "*README.md", "README.md"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    if not tracked:
        tracked = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("README.md")
                   if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    assert sorted(set(tracked)) == sorted(READMES + PARSE_ONLY_READMES)


def test_every_block_has_a_check():
    for b in _blocks():
        if b.lang in ("bash", "python"):
            continue
        if b.lang == "yaml":
            assert _yaml_name(b), f"{b.id}: a YAML block must start with '# NAME.yaml'"
        elif b.lang == "":
            assert (_is_tree(b) or b.first_line.startswith(ERROR_TRANSCRIPT_PREFIX)
                    or b.first_line.startswith(QUICKSTART_TRANSCRIPT_PREFIX)), \
                f"{b.id}: a plain block that is neither a tree nor a known transcript"
        else:
            pytest.fail(f"{b.id}: no check for ```{b.lang} blocks")


def test_every_kflow_command_is_classified():
    """Each kflow command is run, served, or listed as checked-only with a reason."""
    seen = set()
    for c in _commands(program="kflow"):
        k = _ckey(c)
        seen.add(k)
        assert k in EXECUTED or k in CHECKED_ONLY or k in SERVED or \
            (c.block.readme == "serving/README.md" and c.argv[1:2] == ["serve"]), \
            f"{c.block.id}: `{c.key}` is new: add it to EXECUTED or CHECKED_ONLY in {__file__}"
    stale = (set(EXECUTED) | set(CHECKED_ONLY) | SERVED) - seen
    assert not stale, f"commands no longer in the READMEs: {sorted(stale)}"
    assert set(SHORTENED) == {k for k, extra in EXECUTED.items() if extra}
    assert all(extra[:1] == ["--set"] and extra[1].startswith("epochs=")
               for extra in EXECUTED.values() if extra)


def _resolve(spec: str, set_args, ws: Path):
    from kflow.recipe.overrides import resolve_recipe

    path = ws / spec
    return resolve_recipe(str(path) if spec.endswith((".yaml", ".yml")) else spec,
                          set_args=set_args)


def _check_kflow_command(c: Command, ws: Path, known_runs: set[str]) -> None:
    args = _parse(c.argv[1:])
    where = f"{c.block.id}: `{c.key}`"
    recipe_spec = getattr(args, "recipe", None) or (args.name if args.command == "recipes"
                                                   and args.action == "show" else None)
    if recipe_spec and "*" in recipe_spec:  # kflow train runs/tune-RECIPE-TUNER-*/best.yaml
        m = re.fullmatch(r"runs/tune-([\w-]+)-(random|grid|bayesian|hyperband)-\*/best\.yaml",
                         recipe_spec)
        assert m, f"{where}: not the form of a default tuning directory"
        tunes = [t for t in _commands(program="kflow") if t.argv[1:2] == ["tune"]]
        assert any(f"{t.argv[2]}-{t.argv[t.argv.index('--tuner') + 1]}" ==
                   f"{m.group(1)}-{m.group(2)}" for t in tunes if "--tuner" in t.argv), \
            f"{where}: no `kflow tune` in the README makes that directory"
    elif recipe_spec:
        if recipe_spec.endswith((".yaml", ".yml")):
            assert (ws / recipe_spec).is_file(), f"{where}: {recipe_spec} does not exist"
        expect_error = c.block.first_line.startswith(ERROR_TRANSCRIPT_PREFIX)
        try:
            recipe, _ = _resolve(recipe_spec, getattr(args, "set_args", []), ws)
        except Exception as exc:  # noqa: BLE001
            assert expect_error, f"{where}: {type(exc).__name__}: {exc}"
        else:
            assert not expect_error, f"{where}: was expected to fail"
            specs = type(recipe).hparam_specs()
            for item in getattr(args, "search_args", []):
                name = item.partition("=")[0]
                assert name in specs, f"{where}: --search {name} is not a hyperparameter"
            _check_table_columns(recipe, where)
    if args.command == "train" and args.run_dir:
        known_runs.add(args.run_dir)
    for run_dir in ([args.run_dir] if args.command in ("doctor", "report", "export") else
                    args.run_dirs if args.command == "compare" else []):
        assert run_dir in known_runs, \
            f"{where}: {run_dir} is not made by an earlier `kflow train --run-dir` " \
            f"(known: {sorted(known_runs)})"
    if args.command == "serve":
        assert args.base == "exports", f"{where}: the base `kflow export` writes is exports"


def _check_table_columns(recipe, where: str) -> None:
    """A tabular recipe's path exists, and its target / feature columns are in the file."""
    hp = recipe.hparams
    if "target" not in hp or not hp.get("path"):
        return
    path = Path(hp["path"])
    if not path.is_absolute():
        path = Path(recipe.config_dir or ".") / path
    assert path.is_file(), f"{where}: data file {path} does not exist"
    with path.open() as f:
        header = next(csv.reader(f))
    named = [hp["target"], *(hp.get("features") or []), *(hp.get("missing_by_column") or {}),
             *(hp.get("column_types") or {})]
    missing = [c for c in named if c not in header]
    assert not missing, f"{where}: columns {missing} are not in {path.name} ({header})"


@pytest.mark.parametrize("readme", READMES)
def test_kflow_commands_parse_and_name_what_exists(readme, static_ws):
    known = set(PREREQUISITE_RUNS.get(readme, set()))
    cmds = [c for c in _commands([readme], "kflow")]
    for c in cmds:
        _check_kflow_command(c, static_ws, known)
    for b in _blocks([readme]):
        if b.first_line.startswith(ERROR_TRANSCRIPT_PREFIX):
            argv = shlex.split(b.first_line[len(ERROR_TRANSCRIPT_PREFIX) - len("kflow "):])
            _check_kflow_command(Command(b, b.first_line, argv), static_ws, known)


@pytest.mark.parametrize("readme", PARSE_ONLY_READMES)
def test_parse_only_readmes_parse(readme):
    for c in _commands([readme], "kflow"):
        _parse(c.argv[1:])


@pytest.mark.parametrize("block", [b for b in _blocks() if b.lang == "yaml"], ids=lambda b: b.id)
def test_yaml_blocks_load(block, static_ws):
    recipe, _ = _resolve(_yaml_name(block), [], static_ws)
    _check_table_columns(recipe, block.id)


def test_python_blocks_compile():
    for b in _blocks(READMES + PARSE_ONLY_READMES):
        if b.lang == "python":
            compile(b.text, b.id, "exec")


def test_lecture_table_commands():
    """The lecture README's table names its commands inline: each parses and resolves,
    with each `--set` of its row."""
    from kflow.recipe.overrides import resolve_recipe

    text = (ROOT / "recipes/lecture/README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("|") and "kflow " in line]
    assert len(rows) >= 9
    for row in rows:
        spans = re.findall(r"`([^`]+)`", row)
        trains = [s for s in spans if s.startswith("kflow train ")]
        assert trains, row
        for span in trains:
            args = _parse(shlex.split(span)[1:])
            resolve_recipe(str(ROOT / args.recipe), set_args=args.set_args)
        base = _parse(shlex.split(trains[0])[1:]).recipe
        for s in spans:
            if s.startswith("--set "):
                resolve_recipe(str(ROOT / base), set_args=[s.split(" ", 1)[1]])
        for s in spans:  # `..._0.2.yaml`: the sibling of the row's file
            if s.startswith("..."):
                stem = Path(base).name.rsplit("_", 1)[0]
                assert (ROOT / Path(base).parent / f"{stem}{s[3:]}").is_file(), s
    for span in re.findall(r"`(kflow (?:lr-find|recipes show) [^`]+)`", text):
        args = _parse(shlex.split(span)[1:])
        resolve_recipe(getattr(args, "recipe", None) or args.name)


def test_files_named_in_the_readmes_exist():
    """Repository files in inline code and relative links exist."""
    for readme in READMES:
        text = (ROOT / readme).read_text()
        here = (ROOT / readme).parent
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (here / link).exists(), f"{readme}: link {link}"
        for span in re.findall(r"`([\w./-]+\.(?:py|md|yaml|csv|sh|txt|keras))`", text):
            if span.startswith(("runs/", "exports/", "RUN")) or "/" not in span:
                continue
            assert (ROOT / span).exists() or (here / span).exists(), f"{readme}: {span}"


def test_layout_tree_matches_the_repository():
    trees = [b for b in _blocks(["README.md"]) if _is_tree(b) and b.first_line.startswith("kflow/")]
    assert len(trees) == 1
    for path in walk_tree(trees[0]):
        assert (ROOT / path).exists(), f"README layout: {path} does not exist"
    listed = {p.split("/")[1] for p in walk_tree(trees[0]) if p.startswith("kflow/") and
              p.count("/") == 2}
    packages = {p.parent.name for p in (ROOT / "kflow").glob("*/__init__.py")}
    assert packages <= listed, f"packages missing from the README layout: {packages - listed}"


def test_other_commands_name_what_exists():
    """docker, pip and quickstart commands are not run: what they name must exist."""
    from importlib import metadata

    script = (ROOT / "quickstart.sh").read_text()
    for c in _commands():
        prog = c.argv[0]
        where = f"{c.block.id}: `{c.text[:80]}`"
        if prog == "./quickstart.sh":
            assert os.access(ROOT / "quickstart.sh", os.X_OK)
            if len(c.argv) > 1:
                assert re.search(rf"^\s*{c.argv[1]}\)", script, re.M), where
        elif prog == "pip":
            assert c.argv[1:3] == ["install", "-r"], where
            for line in (ROOT / c.argv[3]).read_text().splitlines():
                req = re.split(r"[<>=!~\s#\[]", line.strip(), maxsplit=1)[0]
                if req:
                    metadata.version(req)  # installed in the test environment
        elif prog == "docker":
            if c.argv[1] == "compose":
                compose = c.argv[c.argv.index("-f") + 1]
                text = (ROOT / compose).read_text()
                for var in c.env:
                    assert "${" + var in text, f"{where}: {compose} does not use {var}"
            else:
                vol = c.argv[c.argv.index("-v") + 1]
                assert vol.startswith("$PWD/exports:/models"), where
                assert "--model_config_file=/models/models.config" in c.argv, where
        elif prog == "saved_model_cli":
            assert c.argv[1] == "show" and "--dir" in c.argv, where
        elif prog == "srun":  # a SLURM job step running kflow: the kflow part must parse
            assert c.argv[1] == "kflow", where
            from kflow.cli.main import build_parser

            build_parser().parse_args(c.argv[2:])
        elif prog in ("kflow", "curl", "python"):
            continue
        else:
            pytest.fail(f"{where}: no check for `{prog}` commands")


# ------------------------------------------------------------------------ slow: run them


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _steps(ws: dict[str, Path]) -> list[dict]:
    """What the runner executes, in document order."""
    names = set(BARE_DATA_NAMES)
    for r in READMES:
        names |= kflow_names((ROOT / r).read_text())
    steps = [{"id": "kflow.X.Y after `import kflow`", "kind": "attrs", "names": sorted(names),
              "cwd": str(ws["a"])}]
    copied = False
    for readme in READMES:
        cwd = str(ws[WORKSPACE[readme]])
        if readme == "serving/README.md" and not copied:
            steps.append({"id": "copy runs/digits-cnn for serving/README.md", "kind": "copy",
                          "src": str(ws["a"] / "runs/digits-cnn"),
                          "dst": str(ws["b"] / "runs/digits-cnn")})
            copied = True
        for b in _blocks([readme]):
            if b.first_line.startswith(ERROR_TRANSCRIPT_PREFIX):
                argv = shlex.split(b.first_line[len(ERROR_TRANSCRIPT_PREFIX):])
                steps.append({"id": f"{b.id} {b.first_line}", "kind": "kflow", "argv": argv,
                              "cwd": cwd, "transcript": b.text})
            elif b.lang == "python" and "localhost:8501" not in b.text:
                steps.append({"id": b.id, "kind": "python", "code": b.text, "cwd": cwd})
            elif b.lang == "bash":
                for c in commands(b):
                    if c.argv[0] == "kflow" and _ckey(c) in EXECUTED:
                        steps.append({"id": f"{b.id} {c.key}", "kind": "kflow",
                                      "argv": c.argv[1:] + EXECUTED[_ckey(c)], "cwd": cwd,
                                      "arrow": c.comment})
                    elif c.argv[:2] == ["python", "-c"]:
                        steps.append({"id": f"{b.id} python -c", "kind": "python",
                                      "code": c.argv[2], "cwd": cwd})
    return steps


_SERVE_WAIT = 240


class _Server:
    def __init__(self, cwd: Path, log: Path):
        self.port = _free_port()
        self.log = log.open("w")
        cmd = [sys.executable, "-m", "kflow", "serve", "exports", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)
        self.logpath = log

    def wait(self, models: list[str]) -> None:
        deadline = time.monotonic() + _SERVE_WAIT
        for model in models:
            while True:
                assert self.proc.poll() is None, self.logpath.read_text()[-3000:]
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{self.port}/v1/models/{model}", timeout=5) as r:
                        if "AVAILABLE" in r.read().decode():
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                assert time.monotonic() < deadline, self.logpath.read_text()[-3000:]
                time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Runs the READMEs' executed commands and blocks; starts `kflow serve` on each base."""
    top = tmp_path_factory.mktemp("docs_run")
    ws = {"a": _make_workspace(top / "readme"), "b": _make_workspace(top / "serving")}
    steps = _steps(ws)
    (top / "steps.json").write_text(json.dumps(steps))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "docs_blocks.py"),
         str(top / "steps.json"), str(top / "results.json")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    results = json.loads((top / "results.json").read_text()) \
        if (top / "results.json").exists() else []
    assert proc.returncode == 0 and len(results) == len(steps), proc.stderr[-5000:]
    servers = {k: _Server(ws[k], top / f"serve-{k}.log") for k in ("a", "b")}
    try:
        servers["a"].wait(["digits-cnn"])
        servers["b"].wait(["digits-cnn", "students"])
        yield {"ws": ws, "steps": steps, "results": {r["id"]: r for r in results},
               "servers": servers}
    finally:
        for s in servers.values():
            s.stop()


def _step_ids() -> list[str]:
    return [s["id"] for s in _steps({"a": Path("a"), "b": Path("b")})]


@pytest.mark.slow
@pytest.mark.parametrize("step_id", _step_ids())
def test_executed_step(step_id, executed):
    step = next(s for s in executed["steps"] if s["id"] == step_id)
    r = executed["results"][step_id]
    detail = f"{r['error'] or ''}\n--- stderr\n{r['stderr'][-3000:]}\n--- stdout\n" \
             f"{r['stdout'][-2000:]}"
    if "transcript" in step:  # the mistake: exit 2 and the documented message
        assert r["rc"] == 2, detail
        expected = step["transcript"].splitlines()[1]
        pattern = ".*".join(re.escape(p) for p in expected.split("..."))
        assert re.fullmatch(pattern, r["stderr"].strip().splitlines()[-1]), \
            f"documented:\n{expected}\nprinted:\n{r['stderr'].strip()}"
        return
    assert r["rc"] == 0, detail
    arrow = step.get("arrow", "")
    if "->" in arrow:  # `# -> exports/digits-cnn/1, runs/digits-cnn/export/*.tflite`
        ws = Path(step["cwd"])
        for target in re.split(r"[,+]", arrow.split("->", 1)[1]):
            target = target.strip().split(" ")[0]
            if target:
                assert glob.glob(str(ws / target)), f"{step_id}: {target} was not written"


@pytest.mark.slow
def test_quickstart_transcript(executed):
    """The quick start's transcript has the shape of what `kflow train` prints."""
    block = next(b for b in _blocks(["README.md"])
                 if b.first_line.startswith(QUICKSTART_TRANSCRIPT_PREFIX))
    r = next(r for r in executed["results"].values()
             if r["id"].endswith("kflow train digits-cnn --run-dir runs/digits-cnn"))
    printed = r["stdout"] + r["stderr"]
    for line in (block.first_line, block.text.splitlines()[-2], block.text.splitlines()[-1]):
        head = re.split(r"-<hash>|\d", line)[0]
        assert head in printed, f"the transcript line {line!r} is not printed any more"
    assert re.search(r"runs/digits-cnn-<hash>", block.text)


@pytest.mark.slow
def test_run_directory_tree(executed):
    tree = next(b for b in _blocks(["README.md"]) if _is_tree(b) and
                b.first_line.startswith("runs/"))
    ws = executed["ws"]["a"]
    for path in walk_tree(tree):
        if path not in UNFINISHED_ONLY:
            assert (ws / path).exists(), f"{tree.id}: {path} is not in the run directory"
    history = (ws / "runs/digits-cnn/history.csv").read_text().splitlines()
    assert history[1].split(",")[0] == "1", "history.csv epochs count from 1"


@pytest.mark.slow
def test_serving_and_tflite_trees(executed):
    for readme, k in (("serving/README.md", "b"), ("tflite/README.md", "a")):
        for tree in (b for b in _blocks([readme]) if _is_tree(b)):
            for path in walk_tree(tree):
                assert (executed["ws"][k] / path).exists(), f"{tree.id}: {path} not written"


def _curl(argv: list[str], cwd: Path) -> str:
    """Runs a README's curl command (with curl when installed, else the same request)."""
    if shutil.which("curl"):
        out = subprocess.run(argv + ["-s"], cwd=cwd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout
    data = argv[argv.index("-d") + 1].encode() if "-d" in argv else None
    url = next(a for a in argv[1:] if "/v1/" in a)
    url = url if url.startswith("http") else "http://" + url
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as r:
            return r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def _on_port(text: str, port: int) -> str:
    """The one change made to served blocks: TF Serving's port 8501 -> the test's port."""
    return text.replace("localhost:8501", f"127.0.0.1:{port}").replace(
        "127.0.0.1:8501", f"127.0.0.1:{port}")


@pytest.mark.slow
def test_curl_commands(executed):
    for readme, k in (("README.md", "a"), ("serving/README.md", "b")):
        port = executed["servers"][k].port
        curls = _commands([readme], "curl")
        assert curls
        for c in curls:
            argv = [_on_port(a, port) for a in c.argv]
            body = json.loads(_curl(argv, executed["ws"][k]).replace("NaN", "null"))
            assert "error" not in body, f"{c.block.id}: {c.text[:100]}: {body}"
            if ":predict" in c.text:
                rows = body.get("predictions") or [body["outputs"]]
                assert {"class_id", "class_name", "probabilities"} <= set(rows[0]), body


@pytest.mark.slow
def test_serving_python_client_block(executed):
    block = next(b for b in _blocks(["serving/README.md"])
                 if b.lang == "python" and "localhost:8501" in b.text)
    port = executed["servers"]["b"].port
    out = subprocess.run([sys.executable, "-c", _on_port(block.text, port)],
                         cwd=executed["ws"]["b"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
def test_python_commands(executed):
    """`python serving/client.py ...` (against the server, `--url` added) and the TFLite
    runner commands, run as written."""
    ran = 0
    for c in _commands(program="python"):
        if c.argv[1] == "-c":
            continue  # run by the runner, see test_executed_step
        k = WORKSPACE[c.block.readme]
        argv = [sys.executable, *c.argv[1:]]
        if c.argv[1] == "serving/client.py":
            argv += ["--url", f"http://127.0.0.1:{executed['servers'][k].port}"]
        else:
            assert c.argv[1] == "tflite/kflow_tflite_runner.py", c.text
        out = subprocess.run(argv, cwd=executed["ws"][k], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, f"{c.block.id}: {c.text}\n{out.stderr[-3000:]}"
        assert out.stdout.strip(), c.text
        ran += 1
    assert ran >= 9
