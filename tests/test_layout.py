"""The house plan (docs/layout.md) as tests: the researchers' import paths keep working, every package states
its contents, no module outgrows one concern."""

import ast
import importlib
import pkgutil

import pytest

import bitjax
from tests.support import ROOT


def test_the_researchers_import_paths_are_the_nn_objects():
    from bitjax import nn
    from bitjax.layers import BitLinear, Linear, RMSNorm
    from bitjax.model import ModelConfig, Transformer, count_params

    assert (BitLinear, Linear, RMSNorm) == (nn.BitLinear, nn.Linear, nn.RMSNorm)
    assert (ModelConfig, Transformer, count_params) == (nn.ModelConfig, nn.Transformer, nn.count_params)


def test_the_readme_layer_example_runs():
    """README's "Using the layer" block, executed as written."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Using the layer", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)   # noqa: S102 - our own README
    assert namespace["y_BLF"].shape == (2, 16, 1024)


PACKAGES = sorted(m.name for m in pkgutil.walk_packages(bitjax.__path__, "bitjax.") if m.ispkg)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_init_is_its_table_of_contents(name):
    module = importlib.import_module(name)
    assert module.__doc__ and len(module.__doc__.strip().splitlines()) >= 2, f"{name}: no table of contents"


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "bitjax").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these by concern: {long}"


def test_no_bitjax_import_inside_a_library_function():
    """The dependency graph is what the top-of-module imports say. Allowed inside functions: the command
    modules (so `bitjax --help` does not load JAX), and an import marked `# lazy: <why>` on its line (a module
    that pulls an optional runtime or a slow import)."""
    found = []
    for path in (ROOT / "bitjax").rglob("*.py"):
        if path.parent.name == "cli":
            continue
        text = path.read_text()
        lines, tree = text.splitlines(), ast.parse(text)
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bitjax")
                            and "# lazy:" not in lines[node.lineno - 1]):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert not found, "move these imports to the top of their module:\n" + "\n".join(found)


# What an error may tell a user to delete: bitjax's own files, never the user's data (runs, caches, corpora)
DELETABLE = ("delete the derived cache",   # bitjax's cache of tokenized text (token_shard), rebuilt on rerun
             "If that process is gone, delete")   # a lock file a process on another host left (lock.py)


def test_no_error_tells_a_user_to_delete_their_data():
    """Every string in a `raise` of bitjax: a fix is a new run beside the old one (another --workdir) or the
    command that rewrites what is broken, never deleting a run, a checkpoint, a cache shard or a data file."""
    found = []
    for path in sorted((ROOT / "bitjax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                text = " ".join(c.value for c in ast.walk(node.exc)
                                if isinstance(c, ast.Constant) and isinstance(c.value, str))
                if "delete" in text.lower() and not any(allowed in text for allowed in DELETABLE):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text[:120]}")
    assert not found, "\n".join(found)
