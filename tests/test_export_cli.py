"""`bitjax export` on the command line: success message, one-line errors, exit code 2."""

from bitjax.cli import main


def test_export_gguf_and_packed(trained_run, tmp_path, capsys):
    assert main(["export", str(trained_run), str(tmp_path / "m.gguf"), "--format", "gguf", "--type", "tq1_0"]) == 0
    assert "every ternary code read back equals" in capsys.readouterr().out
    assert main(["export", str(trained_run), str(tmp_path / "packed"), "--format", "packed"]) == 0
    assert (tmp_path / "packed" / "model.safetensors").exists()


def test_errors_are_one_line_with_exit_code_2(trained_run, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "m.gguf"), "--format", "gguf"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bitjax: error: ") and "does not exist" in err and "\n" not in err

    (tmp_path / "m.gguf").write_text("x")
    assert main(["export", str(trained_run), str(tmp_path / "m.gguf"), "--format", "gguf"]) == 2
    assert "--force" in capsys.readouterr().err

    assert main(["export", str(trained_run), str(tmp_path / "p"), "--format", "packed", "--type", "f16"]) == 2
    assert "--type applies to --format gguf only" in capsys.readouterr().err
