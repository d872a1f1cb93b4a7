"""`bitjax export` on the command line: success message, one-line errors, exit code 2."""

import json
import shutil

import gguf
import pytest

from bitjax.cli import main


def test_export_gguf_and_packed(trained_run, tmp_path, capsys):
    assert main(["export", str(trained_run), str(tmp_path / "m.gguf"), "--format", "gguf", "--type", "tq1_0"]) == 0
    out = capsys.readouterr().out
    assert "(gguf, bitnet architecture, tq1_0, embedding q6_k," in out and "every ternary code read back equals" in out
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


def test_an_export_before_lambda_reaches_1_is_refused_in_every_format_unless_allowed(trained_run, tmp_path, capsys):
    """The run's config says the quantization ramps over 100 steps: at step 60 the ternary network is one the run
    never trained. Refused in one line naming the step where lambda reaches 1; the flag writes it, with the
    warning in the model card and the GGUF's general.description."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["quant_warmup_steps"] = 100
    meta["config"]["model"]["int8_matmul"] = False   # the int8 matmul holds lambda at 1; a ramp needs it off
    (run / "config.json").write_text(json.dumps(meta))
    outs = {"gguf": tmp_path / "m.gguf", "packed": tmp_path / "packed"}
    for fmt, out in outs.items():
        assert main(["export", str(run), str(out), "--format", fmt]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "is at step 60, trained at gradual-quantization strength lambda 0.59; lambda " \
            "reaches 1 at step 101 (quant_warmup_steps=100)" in err and "--allow-unfinished-quantization" in err
        assert not out.exists()
    warning = "exported at step 60, before the run's gradual quantization reached lambda 1 (step 101)"
    for fmt, out in outs.items():
        assert main(["export", str(run), str(out), "--format", fmt, "--allow-unfinished-quantization"]) == 0
        assert f"warning: {warning}" in capsys.readouterr().err
    assert f"**Warning:** {warning}" in (outs["packed"] / "README.md").read_text()
    assert warning in gguf.GGUFReader(outs["gguf"]).get_field("general.description").contents()
