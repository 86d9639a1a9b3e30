"""Run tests/openai_server.py's ChatServer as a process: the target of `backend.server_command`
in tests/test_backend_openai.py (`python tests/fake_server_main.py --port {port} --model {model}`)."""

from __future__ import annotations

import argparse
import sys

import torch

from openai_server import ChatServer
from srlm.engines.backends.hf import HFBackend
from srlm.engines.modeling import ModelRef, load_model, load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", required=True, help="model directory; also the served model name")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ref = ModelRef(args.model)
    backend = HFBackend(load_model(ref, dtype=torch.float32), load_tokenizer(ref), batch_size=8)
    server = ChatServer(backend, model=args.model, port=args.port)
    print(f"serving {args.model} on {server.base_url}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
