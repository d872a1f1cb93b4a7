"""Bad input at the command line: one line on stderr naming the problem and the fix, exit code 2."""

from pathlib import Path

import pytest

from bitjax.cli import main

TINY = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.py")
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


@pytest.mark.parametrize("args", [
    ["train", TINY, "--workdir", "gs://no-such-bucket/run", "--set", "steps=2"],
    ["eval", "gs://no-such-bucket/run"],
    ["export", "gs://no-such-bucket/run", "out.gguf", "--format", "gguf"],
    ["export", "runs/x", "s3://bucket/out.gguf", "--format", "gguf"],
])
def test_a_bucket_url_is_refused_before_anything_is_written(capsys, tmp_path, monkeypatch, args):
    """A URL location would otherwise become a local folder named `gs:`: refused in one line, nothing written."""
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, *args)
    assert code == 2 and len(err.splitlines()) == 1 and "://" in err and "mount the bucket" in err
    assert list(tmp_path.iterdir()) == []
