"""Discovery is lazy: listing the methods (`polymoo methods`, the registry) imports no training or tracking stack.

Registering a method only needs its Options and a factory (`harness.method`, `harness.moo.options`,
`harness.preference.method`); TRL, transformers' Trainer, peft, lm-eval, MLflow (and torch itself) are imported by the
functions that train or evaluate. A method module with a top-level `import trl` (or an import of a module that has one,
e.g. `harness.moo.combiners`, `harness.preference.loop`) fails this test, which names the import chain.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

# what listing the methods must not import (issues 9 and 10, "lazy discovery"); torch and transformers too: importing
# either alone takes seconds, and `polymoo methods` should answer in well under one.
FORBIDDEN = ("trl", "transformers.trainer", "peft", "lm_eval", "mlflow", "transformers", "torch")

PROBE = textwrap.dedent("""
    import json, sys, traceback

    FORBIDDEN = set(json.loads(sys.argv[1]))
    FIRST = {}  # forbidden module -> the stack (repo frames) that first imported it

    class Recorder:
        def find_spec(self, name, path=None, target=None):
            if name in FORBIDDEN and name not in FIRST:
                FIRST[name] = [f"{f.filename}:{f.lineno} {f.line}" for f in traceback.extract_stack()
                               if "importlib" not in f.filename and "site-packages" not in f.filename][:-1]
            return None

    sys.meta_path.insert(0, Recorder())
    @BODY@
    loaded = {m: FIRST.get(m, []) for m in sorted(FORBIDDEN) if m in sys.modules}
    print("@@" + json.dumps(loaded))
""")


def _probe(body: str) -> dict[str, list[str]]:
    """Run `body` in a fresh interpreter; the forbidden modules it left in sys.modules, with who imported them."""
    code = PROBE.replace("@BODY@", textwrap.dedent(body).strip())
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(FORBIDDEN)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


def _explain(loaded: dict[str, list[str]]) -> str:
    return "\n".join(f"{name} imported via:\n    " + "\n    ".join(stack or ["?"]) for name, stack in loaded.items())


@pytest.mark.parametrize("what,body", [
    ("registry", "from harness.registry import available_methods, describe\n"
                 "methods = available_methods()\n"
                 "assert {'joint_sft', 'bkmoo', 'congrad'} <= set(methods), sorted(methods)\n"
                 "[describe(m, long=True) for m in methods.values()]"),
    ("cli", "import contextlib, io\n"
            "from harness.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    assert main(['methods', '--long']) == 0\n"
            "assert 'congrad' in out.getvalue()"),
])
def test_listing_methods_imports_no_training_stack(what, body):
    loaded = _probe(body)
    assert not loaded, f"listing the methods ({what}) imported heavy modules:\n{_explain(loaded)}"


def test_the_probe_sees_a_heavy_import(tmp_path):
    """The check is real: a method module with a top-level `import trl` is caught, with its import chain."""
    (tmp_path / "polymoo_heavy_method.py").write_text("import trl  # noqa: F401\n")
    loaded = _probe(f"sys.path.insert(0, {str(tmp_path)!r})\nimport polymoo_heavy_method")
    assert "trl" in loaded and any("polymoo_heavy_method.py:1 import trl" in frame for frame in loaded["trl"]), loaded
