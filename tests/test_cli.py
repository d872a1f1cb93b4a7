"""Bad input at the command line: one line on stderr naming the problem and the fix, exit code 2."""

import importlib.util

import pytest

from bitjax.cli import main
from tests.support import TINY

FAST = ["--set", "model.n_layers=1", "--set", "data.seq_len=32", "--set", "data.batch_size=4",
        "--set", "eval_batches=1", "--no-progress"]


def run_cli(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("args,needle", [
    (["--set", "optim.bogus=1"], "unknown key 'bogus'"),
    (["--set", "steps=many"], "expected int"),
])
def test_bad_set(capsys, tmp_path, args, needle):
    code, err = run_cli(capsys, "train", TINY, "--workdir", str(tmp_path), *args)
    assert code == 2 and needle in err and len(err.splitlines()) == 1


def test_missing_recipe_file(capsys, tmp_path):
    code, err = run_cli(capsys, "train", str(tmp_path / "missing.py"))
    assert code == 2 and "does not exist" in err and len(err.splitlines()) == 1


def test_recipe_without_get_config(capsys, tmp_path):
    recipe = tmp_path / "bad.py"
    recipe.write_text("CONFIG = None\n")
    code, err = run_cli(capsys, "train", str(recipe))
    assert code == 2 and "get_config" in err and len(err.splitlines()) == 1


def test_workdir_with_other_model_shape(capsys, tmp_path):
    assert main(["train", TINY, "--workdir", str(tmp_path), "--set", "steps=2", *FAST]) == 0
    code, err = run_cli(capsys, "train", TINY, "--workdir", str(tmp_path), "--set", "steps=4", *FAST,
                        "--set", "model.n_layers=2")
    assert code == 2 and len(err.splitlines()) == 1
    assert "different model" in err and "n_layers 1 != 2" in err and "--workdir" in err


@pytest.mark.parametrize("args,fix", [
    (["train", TINY, "--workdir", "gs://no-such-bucket/run", "--set", "steps=2", "--set", "checkpoint.every=1"],
     "pip install gcsfs"),
    (["eval", "gs://no-such-bucket/run"], "pip install gcsfs"),
    (["export", "gs://no-such-bucket/run", "out.gguf", "--format", "gguf"], "pip install gcsfs"),
    (["export", "runs/x", "s3://bucket/out.gguf", "--format", "gguf"], "pip install s3fs"),
    (["train", TINY, "--workdir", "nosuch://bucket/run", "--set", "steps=2"], "no filesystem is registered"),
])
def test_a_location_that_cannot_be_opened_is_refused_before_anything_is_written(capsys, tmp_path, monkeypatch,
                                                                                 args, fix):
    """Without the filesystem package for its scheme a URL is refused in one line, and no local `gs:` folder
    appears (pathlib would make one). Here gcsfs and s3fs are not installed (tests/training/test_remote_workdir.py
    runs a gs:// workdir through a stand-in filesystem)."""
    if importlib.util.find_spec("gcsfs") or importlib.util.find_spec("s3fs"):
        pytest.skip("a bucket filesystem package is installed: the URL would be tried over the network")
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, *args)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "cannot open" in err and next(a for a in args if "://" in a) in err
    assert fix in err
    assert list(tmp_path.iterdir()) == []
