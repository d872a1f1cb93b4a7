"""`bitjax export` on the command line: success message, one-line errors, exit code 2."""

import pytest

from bitjax.cli import main


def test_export_gguf_and_packed(trained_run, tmp_path, capsys):
    assert main(["export", str(trained_run), str(tmp_path / "m.gguf"), "--format", "gguf", "--type", "tq1_0"]) == 0
    out = capsys.readouterr().out
    assert "(gguf tq1_0, embedding q6_k," in out and "every ternary code read back equals" in out
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

    assert main(["export", str(trained_run), str(tmp_path / "p"), "--format", "packed",
                 "--embedding-type", "q8_0"]) == 2
    assert "--embedding-type applies to --format gguf only" in capsys.readouterr().err


def test_embedding_type_choices_are_the_writers(capsys):
    from bitjax.export.embedding_quant import EMBEDDING_TYPES

    with pytest.raises(SystemExit):
        main(["export", "run", "out.gguf", "--format", "gguf", "--embedding-type", "q2_k"])
    err = capsys.readouterr().err
    assert "invalid choice: 'q2_k'" in err and ", ".join(f"'{t}'" for t in EMBEDDING_TYPES) in err
