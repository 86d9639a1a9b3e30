"""Resumable, sharded generation work shared by the prompts, sample and judge stages.

Work is cut into fixed chunks, each with a seed derived from (run seed, iteration, stage,
chunk index). Chunk i runs on process i % world_size (`accelerate launch` sets the world),
and each finished chunk is appended as one JSON line to `<out>.partial.<rank>`. A killed run
re-reads every partial file and skips finished chunks, so the final file is identical to an
uninterrupted run whatever the number of processes on either run.
"""

from __future__ import annotations

import glob
import hashlib
import os
from typing import Any, Callable, Sequence

from srlm.run import progress
from srlm.run.records import append_jsonl, is_done, mark_done, read_jsonl, read_partial, write_jsonl


def world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def barrier() -> None:
    if world()[1] > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            from accelerate import PartialState

            # On a CPU-only machine PartialState() alone is DistributedType.NO and would not wait.
            PartialState(cpu=not torch.cuda.is_available())
        dist.barrier()


def is_main() -> bool:
    return world()[0] == 0


def derive_seed(*parts: Any) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def run_chunks(out_path: str, items: Sequence[Any], chunk_size: int,
               fn: Callable[[list, int], list], seed_parts: tuple, desc: str) -> list:
    """Apply fn(chunk_items, seed) -> records to every chunk; write all records, in chunk order,
    to out_path with a completion marker. Returns the records."""
    if is_done(out_path):
        return read_jsonl(out_path)
    rank, size = world()
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    chunks = [list(items[i:i + chunk_size]) for i in range(0, len(items), chunk_size)]
    done = _finished_chunks(out_path)
    mine = [i for i in range(len(chunks)) if i % size == rank and i not in done]
    bar = progress.bar(len(chunks), "chunk", desc, disable=rank != 0)
    bar.update(len(chunks) - len(mine) if size == 1 else 0)
    for i in mine:
        records = fn(chunks[i], derive_seed(*seed_parts, i))
        append_jsonl(f"{out_path}.partial.{rank}", [{"chunk": i, "records": records}])
        bar.update(1)
    bar.close()
    barrier()
    if rank == 0:
        done = _finished_chunks(out_path)
        missing = [i for i in range(len(chunks)) if i not in done]
        if missing:
            raise RuntimeError(f"{out_path}: chunks {missing[:5]} missing after all processes finished")
        records = [r for i in range(len(chunks)) for r in done[i]]
        write_jsonl(out_path, records)
        mark_done(out_path, {"records": len(records), "chunks": len(chunks)})
        for p in glob.glob(f"{out_path}.partial.*"):
            os.remove(p)
    barrier()
    return read_jsonl(out_path)


def _finished_chunks(out_path: str) -> dict[int, list]:
    done: dict[int, list] = {}
    for p in glob.glob(f"{out_path}.partial.*"):
        for line in read_partial(p):
            done[int(line["chunk"])] = line["records"]
    return done
