"""The web export in a real browser: headless Chromium runs the page, and its greedy tokens are llama.cpp's.

A trained tiny run is exported with `--format web` (split into several GGUF files, which the page must put back
together), served on 127.0.0.1, and opened in Debian's Chromium through Playwright. The page's llama.cpp is
wllama's WebAssembly build; the reference is llama-cpp-python's native build on the same files. Checked:
- typing a prompt and pressing Generate streams 32 greedy tokens equal to llama.cpp's (the same ids, the same
  text; both skip the tokens the page never samples, bitjax/export/web_vocab.py), each with a log-probability
  within 0.05 of llama.cpp's log-softmax, and shows tokens/s; three sampled continuations stream too;
- served cross-origin isolated the page runs threaded; from a plain static server (`python -m http.server`'s
  handler) it falls back to one thread and gives the same tokens.
Skipped, saying what to install, where Chromium, Playwright or the npm runtime is missing (.ci/run installs
them). Set BITJAX_WEB_SCREENSHOT=docs/web-page.png to keep the page's screenshot (docs/export.md shows it).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bitjax.errors import ExportError
from bitjax.export import llama_check, web_driver, web_runtime
from bitjax.export.web import export_web
from tests.support import ROOT

PROMPT = "What is"   # the 60-step model continues most prompts with newlines only; this one with words
N_TOKENS = 32
# nats. WebAssembly's kernels round differently from the native x86 ones: 9.4e-3 at most here (mean 3e-3)
LOGPROB_TOLERANCE = 0.05


def _skip_reason() -> str | None:
    problem = web_driver.browser_problem()
    if problem:
        return problem
    try:
        web_runtime.find_runtime()
    except ExportError as e:
        return str(e)
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=f"web export in Chromium: {_skip_reason()}")


@pytest.fixture(scope="module")
def web_folder(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("web") / "site"
    result = export_web(trained_run, out, split_mb=0.5)
    assert len(result["files"]) >= 2, result   # the page must load split files
    return out, result


@pytest.fixture(scope="module")
def reference(web_folder):
    out, result = web_folder
    llm = llama_check.open_model(out / result["files"][0], n_ctx=256)   # llama.cpp finds the other split files
    yield llm
    llm.close()


def _llama_greedy(llm, prompt: str, n: int, banned: list[int]) -> tuple[list[int], list[float]]:
    """llama.cpp's greedy tokens among those the page may sample (stopping at end of text) and each one's
    log-probability."""
    eos = llm.token_eos()
    llm.reset()
    llm.eval(llama_check.llama_tokenize(llm, prompt))
    ids, logprobs = [], []
    for _ in range(n):
        logits = np.asarray(llm.scores[llm.n_tokens - 1], np.float64)
        log_softmax = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
        token = int(np.argmax(np.where(np.isin(np.arange(len(logits)), banned), -np.inf, logits)))
        if token == eos:
            break
        ids.append(token)
        logprobs.append(float(log_softmax[token]))
        llm.eval([token])
    return ids, logprobs


def _generate_in_ui(page, prompt: str, max_tokens: int, temperature: float) -> dict:
    page.evaluate("window.bitjaxWeb.last = null")
    page.fill("#prompt", prompt)
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#temperature", str(temperature))
    page.click("#generate")
    page.wait_for_function("window.bitjaxWeb.last !== null || window.bitjaxWeb.error", timeout=120_000)
    assert page.evaluate("window.bitjaxWeb.error") is None
    page.wait_for_function("!document.getElementById('generate').disabled")
    return page.evaluate("window.bitjaxWeb.last")


def test_page_streams_llama_cpp_greedy_tokens_threaded_and_single_thread(web_folder, reference, tmp_path):
    out, _ = web_folder
    banned = json.loads((out / "bitjax-web.json").read_text())["banned_tokens"]
    assert banned   # the tiny BPE holds the byte tokens 0x80-0xFF: not UTF-8 on their own
    want_ids, want_logprobs = _llama_greedy(reference, PROMPT, N_TOKENS, banned)
    assert want_ids   # something to compare: the model does not end the text at once

    with web_driver.browser() as chromium:
        with web_driver.served(out, isolated=True) as url:
            page = web_driver.open_page(chromium, url + "?ids=1")
            info = web_driver.page_info(page)
            assert info["crossOriginIsolated"]
            if page.evaluate("navigator.hardwareConcurrency") >= 2:
                assert info["multithread"] and info["threads"] >= 2
            ui = _generate_in_ui(page, PROMPT, N_TOKENS, 0)
            assert ui["ids"] == want_ids
            assert ui["text"] == reference.detokenize(want_ids).decode("utf-8")
            gap = np.abs(np.asarray(ui["logprobs"]) - want_logprobs)
            print(f"browser vs llama.cpp log-probabilities of the {len(want_ids)} greedy tokens: max |diff| "
                  f"{gap.max():.2e}, mean {gap.mean():.2e}; decode {ui['decodePerSecond']:.1f} tokens/s")
            assert gap.max() < LOGPROB_TOLERANCE
            assert "tokens/s decode" in page.inner_text("#speed") and ui["decodePerSecond"] > 0

            for _ in range(3):   # sampled (the banned tokens keep it streamable): the page's use, and the screenshot
                _generate_in_ui(page, "ROMEO:", 48, 0.8)
            page.screenshot(path=str(tmp_path / "web-page.png"), full_page=True)
            if os.environ.get("BITJAX_WEB_SCREENSHOT"):
                shutil.copyfile(tmp_path / "web-page.png", os.environ["BITJAX_WEB_SCREENSHOT"])

        with web_driver.served(out, isolated=False) as url:   # what `python -m http.server` serves
            page = web_driver.open_page(chromium, url)
            info = web_driver.page_info(page)
            assert not info["crossOriginIsolated"] and not info["multithread"] and info["threads"] == 1
            single = web_driver.generate(page, prompt=PROMPT, maxTokens=N_TOKENS, temperature=0, ids=True)
            assert single["ids"] == want_ids


def test_web_benchmark_smoke():
    """benchmarks/web.py --smoke runs end to end (tiny shape, one round), so the figures in docs/ cannot rot."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-m", "benchmarks.web", "--smoke"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for row in ("| browser | 1 |", "| browser | 2 |", "| llama.cpp | 1 |", "| llama.cpp | 2 |"):
        assert row in result.stdout
