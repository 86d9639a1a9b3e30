"""The run directory, the project's contract: every path of a run, and the completion markers
with their provenance, live here and nowhere else.

    DIR/config.yaml                 the resolved config the run was started with
    DIR/metrics.json                `group/name` metrics per stage group (sft, iter_<t>, eval)
    DIR/eft/eft.jsonl               EFT built from ranked human data (eft_build stage)
    DIR/models/M<t>                 merged models (M1 after SFT, M_{t+1} after iteration t's DPO)
    DIR/iter_<t>/prompts.jsonl, candidates.jsonl, judgments.jsonl, pairs.jsonl, dpo_log.json
    DIR/iter_<t>/meta_judgments.jsonl, judge_pairs.jsonl  (Meta-Rewarding, methods/meta_rewarding.py)
    DIR/iter_<t>/judgments_prev.jsonl or implicit_rewards.jsonl  (CREAM's two rankings, methods/cream.py)
    DIR/iter_<t>/references.jsonl   DNO's reference answers, judged with the candidates (methods/dno.py)
    DIR/iter_<t>/reward_model/, rl_log.json  RLHF's reward model and RL log (methods/rlhf.py)
    DIR/eval/, DIR/report/, DIR/logs/<stage>.log, DIR/checkpoints/

A finished output has a `<output>.done` marker: a JSON object with the stage's metrics
("stats"), the digests of the inputs it was built from ("inputs"), the digest of the config
values it used ("config") and those values ("config_values", so a key a newer srlm adds at its
default does not make it stale), the command-line overrides it ran with ("overrides") and its own
digest, which downstream stages record as their input. A stage whose recorded inputs or config
no longer match is stale and runs again (see pipeline.py).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys

from srlm.run.records import atomic_write_text, read_json

MARKER = ".done"


class RunDir:
    def __init__(self, root: str):
        self.root = root

    def __repr__(self) -> str:
        return f"RunDir({self.root!r})"

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    # -- files of the contract -------------------------------------------------------------

    @property
    def config(self) -> str:
        return self.path("config.yaml")

    @property
    def metrics(self) -> str:
        return self.path("metrics.json")

    @property
    def eft_built(self) -> str:
        return self.path("eft", "eft.jsonl")

    @property
    def sft_log(self) -> str:
        return self.path("sft_log.json")

    @property
    def models_dir(self) -> str:
        return self.path("models")

    def model(self, t: int) -> str:
        return self.path("models", f"M{t}")

    def iter_dir(self, t: int) -> str:
        return self.path(f"iter_{t}")

    def prompts(self, t: int) -> str:
        return self.path(f"iter_{t}", "prompts.jsonl")

    def candidates(self, t: int) -> str:
        return self.path(f"iter_{t}", "candidates.jsonl")

    def judgments(self, t: int) -> str:
        return self.path(f"iter_{t}", "judgments.jsonl")

    def pairs(self, t: int) -> str:
        return self.path(f"iter_{t}", "pairs.jsonl")

    def judgments_prev(self, t: int) -> str:
        """CREAM: the previous model's judgments of iteration t's candidates (methods/cream.py)."""
        return self.path(f"iter_{t}", "judgments_prev.jsonl")

    def implicit_rewards(self, t: int) -> str:
        """CREAM: the current and previous model's implicit rewards of iteration t's candidates (methods/cream.py)."""
        return self.path(f"iter_{t}", "implicit_rewards.jsonl")

    def references(self, t: int) -> str:
        """DNO: one reference answer per prompt of iteration t, a CandidateRecord the judge scores too
        (methods/dno.py)."""
        return self.path(f"iter_{t}", "references.jsonl")

    def meta_judgments(self, t: int) -> str:
        return self.path(f"iter_{t}", "meta_judgments.jsonl")

    def judge_pairs(self, t: int) -> str:
        return self.path(f"iter_{t}", "judge_pairs.jsonl")

    def dpo_log(self, t: int) -> str:
        return self.path(f"iter_{t}", "dpo_log.json")

    def reward_model(self, t: int) -> str:
        """RLHF: the reward model trained on iteration t's pairs, a model directory (methods/rlhf.py)."""
        return self.path(f"iter_{t}", "reward_model")

    def rl_log(self, t: int) -> str:
        """RLHF: the RL trainer's log of iteration t (methods/rlhf.py)."""
        return self.path(f"iter_{t}", "rl_log.json")

    @property
    def eval_dir(self) -> str:
        return self.path("eval")

    def eval_file(self, name: str) -> str:
        return self.path("eval", name)

    @property
    def report_dir(self) -> str:
        return self.path("report")

    def log(self, stage: str) -> str:
        return self.path("logs", f"{stage}.log")

    def checkpoint(self, name: str) -> str:
        return self.path("checkpoints", name)

    def stage_checkpoint(self, stage: str, t: int = 0) -> str:
        """Trainer checkpoints of a training stage, kept until its output is saved."""
        return self.checkpoint(f"{stage}_{t}" if t else stage)

    def iterations_present(self) -> list[int]:
        found = []
        for d in glob.glob(self.path("iter_*")):
            tail = os.path.basename(d)[5:]
            if tail.isdigit():
                found.append(int(tail))
        return sorted(found)

    # -- markers ---------------------------------------------------------------------------

    @staticmethod
    def marker_path(output: str) -> str:
        return output + MARKER

    def read_marker(self, output: str) -> dict | None:
        """The marker of a finished output, or None (absent, unreadable or not a JSON object: the
        output then counts as unfinished and is rebuilt)."""
        path = self.marker_path(output)
        if not os.path.exists(path):
            return None
        try:
            data = read_json(path, None)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            print(f"srlm: warning: {path}: unreadable marker ({e}); the stage will run again", file=sys.stderr)
            return None
        return data if isinstance(data, dict) else None

    def is_done(self, output: str) -> bool:
        return os.path.exists(output) and self.read_marker(output) is not None

    def write_marker(self, output: str, stats: dict, inputs: dict[str, str], config_digest: str,
                     overrides: list[str] | None = None, config_values: dict | None = None) -> dict:
        body = {"stats": stats, "inputs": inputs, "config": config_digest, "overrides": list(overrides or [])}
        if config_values is not None:
            body["config_values"] = config_values
        body["digest"] = _sha(json.dumps(body, sort_keys=True))
        atomic_write_text(self.marker_path(output), json.dumps(body, indent=1, ensure_ascii=False))
        return body

    def remove(self, output: str) -> None:
        """An output, its marker, its partial files and its start record."""
        for p in [output, self.marker_path(output), output + ".started", *glob.glob(output + ".partial.*")]:
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
        if os.path.isdir(output + ".tmp"):
            shutil.rmtree(output + ".tmp")

    def clear_partials(self, output: str) -> None:
        for p in [output + ".started", *glob.glob(output + ".partial.*")]:
            if os.path.exists(p):
                os.remove(p)

    # -- digests -------------------------------------------------------------------------

    def input_digests(self, paths: list[str]) -> dict[str, str]:
        """{input: digest}, inputs inside the run directory named relative to it (a moved or
        copied run keeps its provenance)."""
        root = os.path.abspath(self.root)
        out = {}
        for p in paths:
            ap = os.path.abspath(p)
            key = os.path.relpath(ap, root) if ap.startswith(root + os.sep) else p
            out[key] = self.digest(p)
        return out

    def digest(self, path: str) -> str:
        """What a downstream stage records of an input: the content hash of a file (a hand edit
        shows), a finished model directory's own marker digest (hashing weights would be slow),
        else the name itself (Hub ids, hf: datasets)."""
        if os.path.isdir(path):
            marker = self.read_marker(path)
            if marker and "digest" in marker:
                return "marker:" + marker["digest"]
        return file_digest(path)


_FILE_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str) -> str:
    if os.path.isfile(path):
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
        if key not in _FILE_DIGESTS:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            _FILE_DIGESTS[key] = "sha256:" + h.hexdigest()
        return _FILE_DIGESTS[key]
    if os.path.isdir(path):
        # A model directory from outside the run: its config and weight files' sizes and times.
        parts = []
        for name in sorted(os.listdir(path)):
            p = os.path.join(path, name)
            if os.path.isfile(p):
                st = os.stat(p)
                parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        return "dir:" + _sha("|".join(parts))
    return "name:" + path


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_digest(values: dict) -> str:
    return _sha(json.dumps(values, sort_keys=True, default=str))
