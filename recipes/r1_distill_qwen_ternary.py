"""DeepSeek-R1-Distill-Qwen-1.5B converted into a ternary student and distilled from itself, online.

The pipeline bitjax grew from: take R1-Distill-Qwen-1.5B, keep training it, quantize it to 1.58 bits, ship it
to CPUs. The student has the source's architecture exactly (Qwen2: 28 blocks, 1536 wide, 12 query / 2 key-value
heads of 128, FFN 8960, SiLU, q/k/v biases, an untied head, its 151,936-row vocabulary) and no SubLN, so at
lambda 0 it is the source, and it exports as a `qwen2` GGUF (TQ2_0 weights) that stock llama.cpp runs and as
a packed `Qwen2ForCausalLM` for transformers (docs/model.md, "Which export path a student takes"). Its first
parameters are the source's (`init_from`); quantization ramps in over the first 1000 steps while the same model,
frozen in full precision, runs inside the train step as the teacher (`distill.online`: its top-32 on every
position, no cache to write).

The checkpoint is not shipped. Save the Hugging Face directory (config.json, *.safetensors, tokenizer.json)
under models/DeepSeek-R1-Distill-Qwen-1.5B next to where you run bitjax (or --set init_from=hf:DIR
distill.teacher=hf:DIR data.tokenizer=DIR/tokenizer.json); init_from checks every architecture setting below
against its config.json and names any that differ with the --set that fixes it (Qwen2 checkpoints come with
tied and untied heads). Nothing is downloaded.

    bitjax plan recipes/r1_distill_qwen_ternary.py --preset v5p-64                 # 10B tokens (BitDistill's)
    bitjax fit-check recipes/r1_distill_qwen_ternary.py --preset v5p-64 --topology v5p-64
    bitjax train recipes/r1_distill_qwen_ternary.py --preset v5p-64                # on every worker of the slice
    bitjax train recipes/r1_distill_qwen_ternary.py --preset h100x8                # one host, 8 x H100
    bitjax export runs/r1_distill_qwen_ternary student.gguf --format gguf         # qwen2, TQ2_0, Q6_K head

Steps: 19,074 x 128 rows x 4096 tokens = 10.0B tokens, BitDistill's continued-training budget for its Qwen3
students. The learning rates are a starting point, not tuned: no run of this recipe exists yet (it cannot run
on the machines bitjax is developed on). The attention-relation loss is off: at 4096 positions its L x L
relation matrices cost about 2 GiB each per relation kind and model at 4 rows per device (docs/model.md);
turn it on with --set distill.relation_weight=1.0 on shorter sequences.
"""

from pathlib import Path

from bitjax.config import (
    CheckpointConfig,
    DataConfig,
    DistillConfig,
    MeshConfig,
    ModelConfig,
    OptimConfig,
    SourceConfig,
    TrainConfig,
)

MODEL_DIR = "models/DeepSeek-R1-Distill-Qwen-1.5B"
SOURCE = f"hf:{MODEL_DIR}"
REPHRASED = Path(__file__).resolve().parent.parent / "data" / "rephrased" / "shakespeare.jsonl"
# Natural 60% / rephrased 40% (BeyondWeb's split), both distilled ("kd") from the online teacher. The shipped
# corpora are small stand-ins so the recipe builds offline; for a real run point these at your own data, e.g.
#   SourceConfig("fineweb_edu", "parquet:gs://BUCKET/fineweb-edu/sample/10BT/*.parquet", weight=0.6, objective="kd"),
#   SourceConfig("rephrased", "jsonl:gs://BUCKET/rephrased/*.jsonl", weight=0.4, objective="kd"),
# and add reasoning traces (`traces:FILE.jsonl`, objective "sft") to keep the model's <think> format.
SOURCES = (
    SourceConfig("natural", "tfds:shakespeare", weight=0.6, objective="kd"),
    SourceConfig("rephrased", f"jsonl:{REPHRASED}", weight=0.4, objective="kd"),
)

PRESETS = {
    # v5p-64: 32 chips, FSDP over all of them, 4 rows of 4096 tokens per chip
    "v5p-64": ["mesh.data=1", "mesh.fsdp=32", "data.batch_size=128", "mesh.distributed=on"],
    # one host with 8 x H100 (80 GB): FSDP over the 8 GPUs, 4 rows per GPU; a quarter of the slice's tokens per
    # step, so the same 10B tokens take four times the steps
    "h100x8": ["mesh.data=1", "mesh.fsdp=8", "data.batch_size=32", "mesh.distributed=off", "steps=76296"],
}


def get_config() -> TrainConfig:
    return TrainConfig(
        name="r1_distill_qwen_ternary",
        # DeepSeek-R1-Distill-Qwen-1.5B's config.json (model_type qwen2); sub_norms=False keeps its architecture
        model=ModelConfig(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12, n_kv_heads=2, head_dim=128,
                          d_ff=8960, ffn_activation="silu", max_seq_len=131072, rope_theta=10_000.0, norm_eps=1e-6,
                          attention_bias=True, tie_embeddings=False, sub_norms=False,
                          dtype="bfloat16", remat="full"),
        init_from=SOURCE,
        quant_warmup_steps=1000,
        data=DataConfig(sources=SOURCES, tokenizer=f"{MODEL_DIR}/tokenizer.json", seq_len=4096, batch_size=128),
        distill=DistillConfig(teacher=SOURCE, online=True, k=32, kind="forward_kl", kd_weight=0.9),
        optim=OptimConfig(peak_lr=3e-4, stage2_peak_lr=1e-4, warmup_steps=500, two_stage=True, stage_split=0.5,
                          weight_decay=0.0),
        mesh=MeshConfig(data=1, fsdp=-1),
        checkpoint=CheckpointConfig(every=500, keep=3),
        steps=19_074,
        log_every=20,
        eval_every=1000,
    )
