"""What the project ships never unpickles: no pickle, no unsafe torch.load, no unsafe YAML.

The checks parse every Python file of the package, the launch files and the scripts (the
syntax tree, so comments and strings do not count) and name each offending call.
"""

from __future__ import annotations

import ast

from ros_support import REPO

SHIPPED = sorted(
    p
    for folder in ("vljepa_ros", "launch", "scripts")
    for p in (REPO / folder).rglob("*.py")
    if "__pycache__" not in p.parts
)
UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def offences(source: str) -> list[str]:
    """Unpickling imports and calls in one file's source, as 'line: what'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            module = getattr(node, "module", None) or ""
            for name in [*names, module]:
                if name.split(".")[0] in UNPICKLING_MODULES:
                    found.append(f"{node.lineno}: imports {name}")
        if not isinstance(node, ast.Call):
            continue
        func = _dotted(node.func)
        if func == "torch.load":
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{node.lineno}: {func} without weights_only=True")
        if func in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            loader = _dotted(_keyword(node, "Loader") or ast.Constant(None))
            if func != "yaml.load" or not loader.endswith("SafeLoader"):
                found.append(f"{node.lineno}: {func} (use yaml.safe_load)")
        if func.endswith(("np.load", "numpy.load")):
            allow = _keyword(node, "allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                found.append(f"{node.lineno}: {func} with allow_pickle=True")
    return found


def test_the_scan_sees_what_it_looks_for() -> None:
    """Each kind of offence is caught, and the safe forms pass."""
    bad = (
        "import pickle\nfrom joblib import load\nimport torch, yaml, numpy as np\n"
        "torch.load('m.pt')\ntorch.load('m.pt', weights_only=False)\nyaml.load(text)\n"
        "yaml.unsafe_load(text)\nnp.load('a.npy', allow_pickle=True)\n"
    )
    assert len(offences(bad)) == 7, offences(bad)
    good = (
        "import torch, yaml, numpy as np\ntorch.load('m.pt', weights_only=True)\n"
        "yaml.safe_load(text)\nyaml.load(text, Loader=yaml.SafeLoader)\nnp.load('a.npy')\n"
        "text = 'import pickle; torch.load(x)'  # a string is not code\n"
    )
    assert offences(good) == []


def test_shipped_code_never_unpickles() -> None:
    """No file of the package, the launch files or the scripts unpickles anything."""
    assert len(SHIPPED) > 30  # the package was found
    found = {str(p.relative_to(REPO)): offences(p.read_text(encoding="utf-8")) for p in SHIPPED}
    assert {k: v for k, v in found.items() if v} == {}
