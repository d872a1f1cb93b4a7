"""Chat models that write text for bitjax: the rephraser's generator and the teacher that samples traces.

    model = open_chat_model("smollm2")            # the embedded SmolLM2-135M-Instruct GGUF (llama.cpp)
    model = open_chat_model("path/model.gguf")    # any GGUF chat model (llama-cpp-python)
    model = open_chat_model("path/hf_model_dir")  # a transformers causal LM from a local directory
    model = open_chat_model("hf:ORG/NAME")        # ... or from the Hugging Face Hub (gguf:ORG/NAME/FILE.gguf too)
    model = open_chat_model("bitjax:RUN_DIR")     # a model bitjax trained, decoded in batches in JAX
    prompt = model.render([{"role": "user", "content": "2 + 3 = ?"}])   # the model's own chat template
    done = model.complete_many([prompt] * 4, max_new_tokens=128, temperature=0.7, top_p=0.9, seeds=[0, 1, 2, 3])

llama.cpp and transformers answer one prompt per call (`batch_size` 1); a bitjax run answers `batch_size`
prompts per call with a key/value cache (bitjax.run.chat), each row from its own seed either way.

`render` returns the exact text the model is prompted with (its chat template, generation prompt
included), so a trace can record it and a student can be trained on the same prompt.
"""

from __future__ import annotations

from pathlib import Path

from bitjax.errors import ConfigError
from bitjax.pretrained import spec as model_spec
from bitjax.run.chat import Completion, run_chat_model
from bitjax.teachers.llama_cpp import plain_cpu_buffers


class _OneAtATime:
    """`complete_many` for models that answer one prompt per call (llama.cpp, transformers on CPU)."""

    batch_size = 1

    def complete_many(self, prompts: list[str], *, max_new_tokens: int, temperature: float, top_p: float,
                      seeds: list[int], on_batch=None) -> list[Completion]:
        out = []
        for prompt, seed in zip(prompts, seeds):
            out.append(self.complete(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                     seed=seed))
            if on_batch is not None:
                on_batch(1, out[-1].tokens)
        return out


class LlamaCppChatModel(_OneAtATime):
    """A GGUF chat model through llama-cpp-python, prompted with the chat template stored in the GGUF."""

    def __init__(self, path: Path, *, n_ctx: int = 2048, n_threads: int = 1, seed: int = 0):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        try:
            with plain_cpu_buffers():
                self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, seed=seed, verbose=False)
        except ValueError as e:   # llama-cpp-python's "Failed to load model from file"
            raise ConfigError(f"{path} is not a GGUF model llama.cpp can load ({e}); pass a GGUF chat model") from None
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigError(f"{path} stores no chat template (tokenizer.chat_template); use a chat model")
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self.eos_text = self.llm._model.token_get_text(eos) if eos != -1 else ""
        bos_text = self.llm._model.token_get_text(bos) if bos != -1 else ""
        self._formatter = Jinja2ChatFormatter(template, eos_token=self.eos_text, bos_token=bos_text)
        self.name = f"llama.cpp:{path.name}"

    def render(self, messages: list[dict]) -> str:
        return self._formatter(messages=messages).prompt

    def complete(self, prompt: str, *, max_new_tokens: int, temperature: float, top_p: float,
                 seed: int) -> Completion:
        # The rendered prompt already holds its special tokens: tokenize them as such, add no BOS.
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        out = self.llm.create_completion(prompt=tokens, max_tokens=max_new_tokens, temperature=temperature,
                                         top_p=top_p, seed=seed, stop=[self.eos_text] if self.eos_text else [])
        choice = out["choices"][0]
        return Completion(choice["text"].strip(), choice["finish_reason"] or "stop",
                          int(out["usage"]["completion_tokens"]))

    def __call__(self, user_message: str, settings, seed: int) -> str:
        """One user turn -> the reply (the rephraser's call)."""
        return self.complete(self.render([{"role": "user", "content": user_message}]),
                             max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                             top_p=settings.top_p, seed=seed).text


class TransformersChatModel(_OneAtATime):
    """A Hugging Face causal LM from a local directory, prompted with its tokenizer's chat template."""

    def __init__(self, directory: Path, *, n_threads: int = 1, **_):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(n_threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"{directory}: its tokenizer has no chat template; pass an instruct (chat) model")
        self.model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
        self.name = f"transformers:{directory.name}"

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def complete(self, prompt: str, *, max_new_tokens: int, temperature: float, top_p: float,
                 seed: int) -> Completion:
        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        self.torch.manual_seed(seed)
        with self.torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                      temperature=temperature if temperature > 0 else None,
                                      top_p=top_p if temperature > 0 else None,
                                      pad_token_id=self.tokenizer.eos_token_id)
        new = out[0, ids.shape[1]:]
        ended = len(new) > 0 and int(new[-1]) == self.tokenizer.eos_token_id
        return Completion(self.tokenizer.decode(new, skip_special_tokens=True).strip(),
                          "stop" if ended or len(new) < max_new_tokens else "length", len(new))

    def __call__(self, user_message: str, settings, seed: int) -> str:
        return self.complete(self.render([{"role": "user", "content": user_message}]),
                             max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                             top_p=settings.top_p, seed=seed).text


def open_chat_model(spec: str, *, n_ctx: int = 2048, n_threads: int = 1, seed: int = 0, batch_size: int = 64):
    """`smollm2` (the embedded GGUF), a `.gguf` file (llama.cpp) or a model directory (transformers), with or
    without their `gguf:` / `hf:` scheme, a Hub id with it (bitjax.pretrained.spec), or `bitjax:RUN_DIR`."""
    parsed = model_spec.parse(spec, "chat model", schemes=("gguf", "hf", "bitjax"), bare=True)
    if parsed.scheme == "bitjax":
        return run_chat_model(parsed.path, batch_size=batch_size)
    if parsed.scheme == "gguf":
        model = LlamaCppChatModel(parsed.path, n_ctx=n_ctx, n_threads=n_threads, seed=seed)
    else:
        model = TransformersChatModel(parsed.path, n_threads=n_threads)
    if parsed.hub_id is not None:   # named by its id, not by the cache's snapshot directory
        model.name = f"{model.name.partition(':')[0]}:{parsed.location}"
    return model
