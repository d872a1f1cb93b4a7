"""`bitjax serve OUT_DIR`: serve a web export on 127.0.0.1 with the headers that give the page threads.

The page runs llama.cpp in WebAssembly threads only when it is cross-origin isolated, which takes two response
headers (Cross-Origin-Opener-Policy: same-origin, Cross-Origin-Embedder-Policy: require-corp); without them
(`python -m http.server`) it runs on one thread. This is the standard library's static server plus those
headers, the WebAssembly MIME type (needed for streaming compilation) and no caching (a re-export is seen on
reload). It is for trying a student locally, not for hosting.
"""

from __future__ import annotations

import functools
import http.server
from pathlib import Path

from bitjax.errors import ExportError
from bitjax.export.web import MANIFEST

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
                      ".json": "application/json", ".gguf": "application/octet-stream"}

    def end_headers(self):
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args):   # noqa: A002 - the standard library's signature
        pass   # one line per request would bury the URL; errors still reach the browser


def make_server(directory: str | Path, host: str = "127.0.0.1", port: int = 8000) -> http.server.ThreadingHTTPServer:
    """A server for a web export folder (port 0 picks a free port: read `server.server_port`)."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise ExportError(f"{directory} is not a web export (no {MANIFEST}); make one with "
                          "`bitjax export RUN_DIR OUT_DIR --format web`")
    handler = functools.partial(_Handler, directory=str(directory))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise ExportError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port") from None


def serve(directory: str | Path, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Serve until Ctrl-C."""
    server = make_server(directory, host, port)
    print(f"serving {directory} at http://{host}:{server.server_port}/ (cross-origin isolated: the page may use "
          "threads); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
