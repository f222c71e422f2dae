"""``nttt serve``: a local browser app to make references with a few clicks, segment images and export.

Needs the ``app`` extra (``pip install "no-time-to-train[app]"``, i.e. Gradio). This module stays light:
Gradio is imported only when the command runs, so ``nttt --help`` is fast. The page is built by
:func:`no_time_to_train.app.server.build_app`; its state logic is :mod:`no_time_to_train.app.session`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError


def check_port(host: str, port: int) -> None:
    """Fail at once, before the models load, when ``host:port`` cannot be listened on (e.g. another server)."""
    import socket

    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): pick another --port, or stop "
                         "the program that uses it") from exc


def cmd_serve(args) -> int:
    check_port(args.host, args.port)
    try:
        from .server import serve
    except ImportError as exc:
        if "gradio" not in str(exc).lower():
            raise
        raise InputError(f"the browser app needs Gradio ({exc}); install it with: "
                         "pip install \"no-time-to-train[app]\"") from exc
    return serve(args)


def add_serve_parser(subparsers) -> Any:
    """Add the ``serve`` verb to the ``nttt`` sub-parsers; returns its parser."""
    from ..cli import _add_method_args, _add_model_args

    p = subparsers.add_parser("serve", help="a local web app: make references with clicks, segment images, export",
                              description="Start the browser app (needs the 'app' extra: Gradio). References are "
                              "made by clicking on objects (SAM2 makes the mask), target images are segmented "
                              "with the memory, and the memory, COCO results and mask PNGs can be downloaded.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: every "
                   "interface)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    p.add_argument("--memory", type=Path, help="memory file (.safetensors) to load at start (default: the memory "
                   "autosaved in --workdir by the last server)")
    p.add_argument("--workdir", type=Path, default=Path("nttt-app"),
                   help="the server's working folder: exports, and the memory autosaved after every change "
                   "(default ./nttt-app)")
    p.add_argument("--fresh", action="store_true", help="start with an empty memory (the autosaved one is kept "
                   "as autosave.previous.safetensors)")
    _add_model_args(p)
    _add_method_args(p)
    p.set_defaults(func=cmd_serve)
    return p
