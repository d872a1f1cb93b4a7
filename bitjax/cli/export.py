"""bitjax export: a run's latest checkpoint to GGUF (llama.cpp), packed safetensors (transformers) or a web folder."""

from __future__ import annotations

NAME = "export"


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a run's latest checkpoint to GGUF (llama.cpp), packed safetensors "
                       "or a static web folder (llama.cpp in WebAssembly)")
    p.add_argument("run_dir", help="a directory written by `bitjax train`")
    p.add_argument("out", help="output: a .gguf file, or a directory for --format packed and --format web")
    p.add_argument("--format", required=True, choices=["gguf", "packed", "web"])
    p.add_argument("--split-mb", type=float, default=None, help="--format web: split the GGUF into files of at "
                   "most this many MB (default 512; a browser reads each file whole)")
    p.add_argument("--type", dest="gguf_type", default=None, choices=["tq2_0", "tq1_0", "f16", "f32"],
                   help="GGUF tensor type of the ternary weights (default tq2_0)")
    p.add_argument("--embedding-type", default=None, choices=["f32", "f16", "q8_0", "q6_k", "q5_k", "q4_k"],
                   help="GGUF type of the token embedding, which is also the tied LM head (default q6_k "
                   "beside tq2_0/tq1_0, else the --type)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--allow-runtime-mismatch", action="store_true",
                   help="write even if the target runtime is known to compute the model differently")
    p.add_argument("--allow-unfinished-quantization", action="store_true",
                   help="export a run whose gradual quantization (quant_warmup_steps) has not reached lambda 1 yet; "
                   "the model card says so")


def run(args) -> int:
    from bitjax.export import export_run
    from bitjax.paths import user_path

    user_path(args.run_dir, "RUN_DIR")
    user_path(args.out, "OUT")

    result = export_run(args.run_dir, args.out, format=args.format, gguf_type=args.gguf_type,
                        embedding_type=args.embedding_type, force=args.force,
                        allow_runtime_mismatch=args.allow_runtime_mismatch,
                        allow_unfinished_quantization=args.allow_unfinished_quantization, progress=True,
                        split_mb=args.split_mb)
    kind = f"{result['format']}, {result['architecture']} architecture" + (
        f", {result['type']}, embedding {result['embedding_type']}" if result["type"] else "")
    print(f"wrote {result['path']} ({kind}, {result['bytes'] / 1e6:.2f} MB, step {result['step']}); "
          "every ternary code read back equals the training quantizer's")
    if result["format"] == "web":
        print(f"serve it with `bitjax serve {result['path']}` (threads) or any static server (one thread)")
    return 0
