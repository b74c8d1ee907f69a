"""Serve a checkpoint over HTTP: translations with their word alignments, and the attention explorer.

    python -m mt.serve --checkpoint CKPT                  # http://127.0.0.1:8000/
    python -m mt.serve --port 8080 --max-beam 5
    curl -s localhost:8000/translate -d '{"text": "A dog runs in the park ."}'

Without --checkpoint, the best checkpoint of the newest finished run under outputs/ is used (and
named). It listens on 127.0.0.1 (this machine only) unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from mt.cli import CommandParser, add_decode_args, add_device_args, decode_config, refuse_problems, setup_device
from mt.config import ServeConfig
from mt.errors import UserError, exit_on_user_error
from mt.rundir import checkpoint_to_use
from mt.serve.server import bind, is_loopback, server_for, url_of

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def option(key: str) -> str:
    return "--" + key.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m mt.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", help="checkpoint file or run folder (default: best.pt of the latest run)")
    d = ServeConfig()
    helps = {
        "host": "address to listen on (default: %(default)s; 0.0.0.0 opens it to the network)",
        "port": "port (default: %(default)s; 0 = any free port)",
        "max_chars": "characters per text (default: %(default)s)",
        "max_texts": "texts per request (default: %(default)s)",
        "max_beam": "largest beam a request may ask for (default: %(default)s)",
        "max_body_bytes": "request body size (default: %(default)s)",
        "queue_size": "requests waiting for the decoder before the answer is 503 (default: %(default)s)",
        "batch_window_ms": "how long a batch waits for more requests (default: %(default)s)",
        "max_batch_texts": "texts per decoding batch (default: %(default)s)",
    }
    for key, text in helps.items():
        default = getattr(d, key)
        p.add_argument(option(key), type=type(default), default=default, help=text)
    p.add_argument("--no-batching", action="store_true", help="decode every request on its own")
    add_decode_args(p)
    add_device_args(p)
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="uvicorn's log level")
    return p


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """ServeConfig from the options, checked; problems name the options, not the config keys."""
    given = {f.name: getattr(args, f.name) for f in fields(ServeConfig) if hasattr(args, f.name)}
    settings = ServeConfig(**given, batching=not args.no_batching)
    refuse_problems(settings.problems(), "serve", {f.name: option(f.name) for f in fields(ServeConfig)})
    if args.beam > settings.max_beam:
        raise UserError(f"--beam ({args.beam}) must not exceed --max-beam ({settings.max_beam})")
    return settings


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_user_error("mt.serve"):
        settings = serve_config(args)
        decode = decode_config(args)
        device = setup_device(args)
        sock = bind(settings.host, settings.port)  # first: a busy port fails before the model loads
        path = checkpoint_to_use(args.checkpoint, "mt.serve")  # a file, a run folder, or the latest run
        from mt.serve.app import create_app
        from mt.translate import Translator

        translator = Translator(path, device, decode, attention=True)
        app = create_app(translator, settings, checkpoint=path)
        loaded = translator.loaded
        print(f"mt.serve: {loaded.src_lang}->{loaded.tgt_lang} on {url_of(sock)} (Ctrl-C to stop)", file=sys.stderr)
        if not is_loopback(sock):
            print(f"mt.serve: warning: {settings.host} is reachable from other machines", file=sys.stderr)
        server_for(app, args.log_level).run(sockets=[sock])


if __name__ == "__main__":
    main()
