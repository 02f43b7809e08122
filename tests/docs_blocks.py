"""Helpers for tests/test_docs.py: the READMEs' code blocks, and a runner for them.

`extract_blocks` finds the fenced code blocks of a Markdown file; `commands`
splits a bash block into commands (continuation lines joined, comments and
`VAR=value` prefixes taken apart); `walk_tree` lists the paths a directory tree
drawn in a block names.

Run as a script (`python tests/docs_blocks.py STEPS.json RESULTS.json`), it
executes steps in one process so that TensorFlow is imported once: `kflow`
commands through the real `kflow.cli.main.main`, Python blocks with `exec`,
each in its own working directory, and writes what each step returned.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

_FENCE = re.compile(r"^```([\w-]*)\s*$")
_ENV = re.compile(r"^[A-Za-z_]\w*=")


@dataclass
class Block:
    """A fenced code block: its README (relative to the repo root), first line, language."""

    readme: str
    line: int
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.readme}:{self.line}"

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0] if self.text.strip() else ""


@dataclass
class Command:
    """One shell command of a bash block."""

    block: Block
    text: str  # the command as written (continuations joined, comment removed)
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    comment: str = ""

    @property
    def key(self) -> str:
        """The command with single spaces between words: the key of the test's tables."""
        return " ".join(self.argv)


def extract_blocks(path: Path, root: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in document order."""
    lines = path.read_text().splitlines()
    rel = path.relative_to(root).as_posix()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        if j == len(lines):
            raise ValueError(f"{rel}:{i + 1}: unclosed code fence")
        blocks.append(Block(rel, i + 1, m.group(1), "\n".join(lines[i + 1:j])))
        i = j + 1
    return blocks


def _split_comment(line: str) -> tuple[str, str]:
    """`cmd args  # comment` -> (`cmd args`, `comment`), minding quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def commands(block: Block) -> list[Command]:
    """The commands of a bash block (`\\` continuations joined; quotes may span lines)."""
    result: list[Command] = []
    pending = ""
    comment = ""
    for raw in block.text.splitlines():
        code, note = _split_comment(raw)
        comment = comment or note
        if code.endswith("\\"):
            pending += code[:-1] + " "
            continue
        text = (pending + code).strip()
        if _unbalanced(text):  # a quoted argument continues on the next line
            pending = text + "\n"
            continue
        pending = ""
        if not text:
            comment = ""
            continue
        argv = shlex.split(text)
        env = {}
        while argv and _ENV.match(argv[0]):
            k, _, v = argv.pop(0).partition("=")
            env[k] = v
        result.append(Command(block, text, argv, env, comment))
        comment = ""
    if pending.strip():
        raise ValueError(f"{block.id}: a command ends with a continuation")
    return result


def _unbalanced(text: str) -> bool:
    try:
        shlex.split(text)
    except ValueError:
        return True
    return False


_PATH_TOKEN = re.compile(r"^[\w.\-]+(/[\w.\-]+)*/?$")


def walk_tree(block: Block) -> list[str]:
    """Paths named by a directory tree drawn in a block (indentation = nesting).

    Each line holds one or more entries separated by two or more spaces,
    then an optional description (words with single spaces) or `# comment`.
    """
    paths: list[str] = []
    stack: list[tuple[int, str]] = [(-1, "")]
    for raw in block.text.splitlines():
        code, _ = _split_comment(raw)
        if not code.strip():
            continue
        indent = len(code) - len(code.lstrip())
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        tokens = [t for t in re.split(r"\s{2,}", code.strip()) if _PATH_TOKEN.match(t)]
        for tok in tokens:
            paths.append(parent + tok)
        if tokens and tokens[0].endswith("/"):
            stack.append((indent, parent + tokens[0]))
    return paths


def kflow_names(text: str) -> set[str]:
    """Every dotted `kflow.X.Y` a text names (and `from kflow.X import a, b` as kflow.X.a)."""
    names = set(re.findall(r"(?<![\w/.\-])kflow(?:\.[A-Za-z_]\w*)+", text))
    for mod, imported in re.findall(r"from (kflow(?:\.\w+)*) import ([\w ,]+)", text):
        names.update(f"{mod}.{n.strip()}" for n in imported.split(",") if n.strip())
    return names


# ---------------------------------------------------------------------------- runner


def _run_step(step: dict) -> dict:
    out, err = io.StringIO(), io.StringIO()
    rc, error = 0, None
    t0 = time.monotonic()
    cwd = os.getcwd()
    os.chdir(step.get("cwd", cwd))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            kind = step["kind"]
            if kind == "kflow":
                from kflow.cli.main import main

                rc = main(step["argv"])
            elif kind == "python":
                code = compile(step["code"], step["id"], "exec")
                exec(code, {"__name__": "__main__"})  # noqa: S102 - the README's own block
            elif kind == "attrs":
                import importlib

                kflow = importlib.import_module("kflow")
                missing = []
                for name in step["names"]:
                    obj = kflow
                    try:
                        for part in name.split(".")[1:]:
                            obj = getattr(obj, part)
                    except AttributeError as exc:
                        missing.append(f"{name}: {exc}")
                if missing:
                    rc, error = 1, "; ".join(missing)
            elif kind == "copy":
                shutil.copytree(step["src"], step["dst"], symlinks=True)
            else:
                raise ValueError(f"unknown step kind {kind!r}")
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported to the test
        rc, error = 1, traceback.format_exc()
    finally:
        os.chdir(cwd)
        sys.stdout.flush()
        sys.stderr.flush()
    return {"id": step["id"], "rc": rc, "error": error, "stdout": out.getvalue()[-20000:],
            "stderr": err.getvalue()[-20000:], "seconds": round(time.monotonic() - t0, 1)}


def run_steps(steps_file: str, results_file: str) -> int:
    steps = json.loads(Path(steps_file).read_text())
    results = []
    for step in steps:
        results.append(_run_step(step))
        Path(results_file).write_text(json.dumps(results, indent=1))  # partial on a timeout
        print(f"docs step {step['id']}: rc {results[-1]['rc']} "
              f"({results[-1]['seconds']} s)", file=sys.__stderr__, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_steps(sys.argv[1], sys.argv[2]))
