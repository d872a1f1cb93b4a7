"""A bitjax run directory, or its GGUF export, as an lm-evaluation-harness model registered as "bitjax".

    bitjax lm-eval --model bitjax --model_args run=runs/tiny --tasks hellaswag,arc_easy --batch_size 16
    bitjax lm-eval --model bitjax --model_args gguf=runs/tiny/student-tq2_0.gguf --tasks hellaswag

    import lm_eval
    import bitjax.evaluation.lm_eval_model  # noqa: F401  (registers "bitjax")
    lm_eval.simple_evaluate(model="bitjax", model_args="run=runs/tiny", tasks=["hellaswag"])

lm-eval 0.4 finds models in its registry only (its command line loads no plugins): importing this module
registers the model, and `bitjax lm-eval` is lm-eval's own command line with it registered (bitjax.cli.lm_eval).

Model arguments: `run` (the run directory) or `gguf` (a GGUF file), `step` (a run's checkpoint; default the
latest), `max_length` (default the model's context), `max_gen_toks` (default 256), `n_threads` (llama.cpp's
CPU threads); lm-eval's `batch_size` (rows per forward, default 16; "auto" is not measured, it means 16).
A run's parameters are restored onto the devices this process has (bitjax.run.Run) and every request is scored
or continued by bitjax itself (bitjax.evaluation.scoring): the run's model fully quantized, as exported. A GGUF
runs in llama.cpp (bitjax.evaluation.gguf_scoring, which says why lm-eval's own `gguf` model is not used).
Tokenization follows lm-eval's own for causal models (`TemplateLM`, as its `hf` model does on a packed export
of the same run): the run's tokenizer (or the GGUF's), `<|endoftext|>` as the prefix of an empty context and as
the end of text. Generation is greedy (a task asking to sample is refused) and stops at the task's `until`
strings or the end of text. Chat templates (`--apply_chat_template`) and multi-process runs are not supported.
"""

from __future__ import annotations

import json
import logging

import lm_eval.models  # noqa: F401  (lm-eval's own models registered first: its registry loads them only when empty)
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from bitjax import tokenizer as tokenizer_lib
from bitjax.errors import ConfigError
from bitjax.evaluation.gguf_scoring import GGUFScorer
from bitjax.evaluation.scoring import RunScorer
from bitjax.run import Run

NAME = "bitjax"
DEFAULT_BATCH_SIZE = 16
log = logging.getLogger(__name__)


@register_model(NAME)
class BitjaxLM(TemplateLM):
    """lm-eval's `loglikelihood`, `loglikelihood_rolling` and `generate_until` for a bitjax run directory."""

    def __init__(self, run: str | None = None, gguf: str | None = None, step: int | None = None,
                 batch_size: int | str | None = DEFAULT_BATCH_SIZE, max_length: int | None = None,
                 max_gen_toks: int = 256, n_threads: int | None = None, **lm_eval_arguments):
        super().__init__()
        ignored = {k: v for k, v in lm_eval_arguments.items() if v is not None and k not in ("max_batch_size",)}
        if ignored:   # e.g. lm-eval's `device`: JAX places the model on the devices it has
            log.warning("bitjax model: ignoring %s", ", ".join(f"{k}={v}" for k, v in ignored.items()))
        if (run is None) == (gguf is None):
            raise ConfigError("--model bitjax: pass --model_args run=RUN_DIR (a run directory) or gguf=FILE.gguf "
                              "(a GGUF export), one of the two")
        max_length = None if max_length is None else int(max_length)
        if run is not None:
            self.scorer = RunScorer(Run(run, None if step is None else int(step)), batch_size=_rows(batch_size),
                                    max_length=max_length)
            self.text = RunText(tokenizer_lib.load(self.scorer.run.tokenizer_path))
        else:
            self.scorer = GGUFScorer(gguf, max_length=max_length, n_threads=n_threads)
            self.text = GGUFText(self.scorer.llm)
        self._max_gen_toks = int(max_gen_toks)

    # ---------------------------------------------------------------- what lm-eval asks of a TemplateLM

    @property
    def eot_token_id(self) -> int:
        return self.text.eot_id

    @property
    def max_length(self) -> int:
        return self.scorer.max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self.scorer.batch_size

    @property
    def tokenizer_name(self) -> str:
        return self.text.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # None: the tokenizer's own choice, as lm-eval's `hf` model and `bitjax generate` encode
        return self.text.encode(string, add_special_tokens is not False)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.text.decode(tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """requests: ((context, continuation) or None, context ids, continuation ids)."""
        answers = []
        for start in tqdm(range(0, len(requests), _CALL_ROWS), disable=disable_tqdm, desc="bitjax loglikelihood"):
            chunk = requests[start:start + _CALL_ROWS]
            scores = self.scorer.continuation_scores([(ctx, cont) for _, ctx, cont in chunk])
            for (request_strings, _, _), answer in zip(chunk, scores):
                if request_strings is not None:   # rolling windows are cached per document, below
                    self.cache_hook.add_partial("loglikelihood", request_strings, answer)
            answers += scores
        return answers

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each document's log-likelihood over disjoint windows of the model's context, the first conditioned
        on the end-of-text token (lm-eval's windows, as its `hf` model computes them)."""
        windows, owner = [], []
        for index, (text,) in enumerate(request.args for request in requests):
            for window in get_rolling_token_windows(token_list=self.tok_encode(text), prefix_token=self.eot_token_id,
                                                    max_seq_len=self.max_length, context_len=1):
                windows.append((None, *make_disjoint_window(window)))
                owner.append(index)
        totals = [0.0] * len(requests)
        for index, (logp, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[index] += logp
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, cut at the first of the request's `until` strings (or the end of text)."""
        eot_text = self.text.eot_text
        groups: dict[str, list[int]] = {}   # requests with the same generation settings decode together
        for index, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
        results = [""] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="bitjax generate_until")
        for indices in groups.values():
            settings = normalize_gen_kwargs(requests[indices[0]].args[1], self.max_gen_toks)
            if settings.get("do_sample") or settings.get("temperature", 0.0) > 0:
                raise ValueError(f"bitjax model: the task samples ({settings}); bitjax's lm-eval model decodes "
                                 "greedily: run the task with --gen_kwargs do_sample=False,temperature=0")
            until = handle_stop_sequences(settings.get("until"), eos=eot_text)
            contexts = [requests[i].args[0] for i in indices]
            continuations = self.scorer.greedy_continuations(
                [self.tok_encode(c) for c in contexts], max_new_tokens=settings["max_gen_toks"],
                stop_ids={self.eot_token_id}, finished=self._reaches_any(until))
            for i, context, ids in zip(indices, contexts, continuations):
                results[i] = postprocess_generated_text(self.tok_decode(ids), until, None)
                self.cache_hook.add_partial("generate_until", (context, requests[i].args[1]), results[i])
            bar.update(len(indices))
        bar.close()
        return results


    def _reaches_any(self, until: list[str]):
        """Whether a continuation's text holds one of the stop strings yet."""
        return lambda ids: any(stop in self.tok_decode(ids) for stop in until if stop)


class RunText:
    """A run's tokenizer (tokenizer.json, the `tokenizers` library)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eot_id = tokenizer_lib.eos_id(tokenizer)
        self.eot_text = tokenizer.decode([self.eot_id], skip_special_tokens=False)
        self.name = f"bitjax-{tokenizer_lib.fingerprint(tokenizer)}"

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


class GGUFText:
    """A GGUF's tokenizer, as llama.cpp reads it (`bitjax generate` on a GGUF tokenizes the same way)."""

    def __init__(self, llm):
        self.llm = llm
        self.eot_id = int(llm.token_eos())
        self.eot_text = llm.detokenize([self.eot_id], special=True).decode("utf-8", errors="replace")
        self.name = f"gguf-{llm.metadata.get('general.name', 'model')}-{llm.n_vocab()}"

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=False)

    def decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode("utf-8", errors="replace")


_CALL_ROWS = 1024   # requests handed to the scorer at once (it batches and sorts them); bounds the progress bar


def _rows(batch_size: int | str | None) -> int:
    """lm-eval's `batch_size`: a number of rows, or "auto" (not measured here: the default)."""
    if batch_size is None or str(batch_size).startswith("auto"):
        return DEFAULT_BATCH_SIZE
    return int(batch_size)
