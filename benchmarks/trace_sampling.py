"""Trace sampling throughput: the batched JAX sampler against one prompt at a time, on the same model.

`bitjax traces` samples the same problems x samples three ways, side by side in one process:
  jax, batch B    --teacher bitjax:RUN --batch B  (the key/value-cache decoder, B rows per call)
  jax, batch 1    --teacher bitjax:RUN --batch 1  (the same decoder one row at a time: the sequential path)
  llama.cpp       --teacher gguf:FILE             (the run's GGUF export, one prompt at a time, --threads T)
and prints generated tokens per second of each (completion tokens / wall seconds, compile included for JAX),
and at temperature 0 how many completions of the batched sampler equal the sequential path's (all of them, by
construction). (llama.cpp's traces prompt the GGUF as a chat model, without the boundary token bitjax puts
before every document, so its texts are not compared here; `bitjax eval FILE.gguf --task` is the export's
like-for-like check, tests/evaluation/test_gguf_task_accuracy.py.)

    python -m benchmarks.trace_sampling --run RUN_DIR --gguf FILE.gguf --task TASK [--prompts 32] [--samples 4]
                                        [--batch 64] [--max-new-tokens 64] [--temperature 1.0] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

from bitjax.cli import main as bitjax_main


def sample(teacher: str, out: Path, a, *, batch: int, temperature: float) -> dict:
    argv = ["traces", "--out", str(out), "--teacher", teacher, "--task", a.task, "--prompts", str(a.prompts),
            "--samples", str(a.samples), "--max-new-tokens", str(a.max_new_tokens), "--temperature",
            str(temperature), "--top-p", "1.0", "--batch", str(batch), "--threads", str(a.threads), "--no-progress"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        if bitjax_main(argv) != 0:
            raise SystemExit(f"bitjax {' '.join(argv)} failed")
    text = printed.getvalue()
    return json.loads(text[text.index("{"):])


def completions(path: Path) -> list[str]:
    return [json.loads(line)["completion"] for line in path.read_text().splitlines()]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for name, teacher, batch in ((f"jax, batch {a.batch}", f"bitjax:{a.run}", a.batch),
                                     ("jax, batch 1", f"bitjax:{a.run}", 1),
                                     (f"llama.cpp, {a.threads} threads", f"gguf:{a.gguf}", 1)):
            for temperature in (a.temperature, 0.0):
                out = tmp / f"{name.split(',')[0]}-{batch}-{temperature}.jsonl"
                s = sample(teacher, out, a, batch=batch, temperature=temperature)
                rows.append({"sampler": name, "temperature": temperature, "traces": s["written"],
                             "tokens": s["tokens"], "seconds": s["seconds"], "positive": s["positive"],
                             "tokens_per_second": s["tokens_per_second"], "file": out})
        greedy = {r["sampler"]: completions(r["file"]) for r in rows if r["temperature"] == 0}
        batched, sequential = (greedy[k] for k in list(greedy)[:2])
        print(f"\n{a.prompts} problems x {a.samples} samples of {a.task}, at most {a.max_new_tokens} new tokens")
        print("| sampler | temperature | tokens | seconds | tokens/s | positive |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['sampler']} | {r['temperature']} | {r['tokens']} | {r['seconds']:.1f} | "
                  f"{r['tokens_per_second']:.0f} | {r['positive']}/{r['traces']} |")
        same = sum(x == y for x, y in zip(batched, sequential))
        print(f"greedy completions of the batched sampler equal to the sequential path's: {same}/{len(sequential)}")


if __name__ == "__main__":
    main()
