"""bitjax serve: a `--format web` folder on 127.0.0.1, with the headers that give the page threads."""

from __future__ import annotations

NAME = "serve"


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a `--format web` folder on 127.0.0.1 with the headers that give the "
                       "page threads (COOP/COEP)")
    p.add_argument("out_dir", help="a folder written by `bitjax export --format web`")
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free port")


def run(args) -> int:
    from bitjax.export.web_serve import serve

    return serve(args.out_dir, port=args.port)
