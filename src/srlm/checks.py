"""Input checks before any compute: every file the config names is opened and validated first.

A bad label in a human-preference file used to surface at evaluation time, after SFT and every
iteration had spent their compute; `check_inputs(cfg)` finds it before any model is loaded. It
reads every input with the stages' own loaders (data/loaders.py, data/rubric.py,
engines/modeling.py's resolve), so a check and a stage can never disagree on what is valid:

    data.ift, data.eft                 seed IFT / EFT sources (paper section 3.1)
    judge.template                     {prompt} and {response} exactly once (Figure 2)
    eval.human_prefs, eval.prompts     labels a/b/tie, PandaLM annotator votes 0/1/2, prompt sets
    prompts.file                       when prompts.source=file
    eft_build.sources, eft_build.judge when eft_build.enabled
    pairs.human_train                  when the run has the human_pairs stage (methods dpo_human, rlhf)
    model.name_or_path, prompts.model, eval.judge, judge.model
                                       a local model or GGUF file exists, the embedded model's
                                       package is installed; a Hub id or openai: judge is taken
                                       as is (checked offline: nothing is downloaded)

Every problem is collected, not only the first: one per file (a loader stops at a file's first
bad record), each naming the config key, the file and its line (or record), and raised together
as one records.InputError. Bytes that are not UTF-8 are reported with their byte offset.
'hf:' datasets are skipped with a note (no network here); their stage reads them.

Returns counts for the pipeline to log, e.g. {"data/ift_examples": 24, "data/ift_empty": 0,
"eval/human_pairs/human_prefs": 40, ...}: `*_empty` counts blank lines (skipped by the
readers) and records a loader skipped as empty; `*_over_long` counts records longer than
`checks/over_long_chars` characters, an estimate of sft.max_length tokens at 4 characters per
token (no tokenizer is loaded here; SFT and DPO truncate such records, sampling skips prompts
that do not fit the context).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from srlm.data import loaders, rubric
from srlm.engines import modeling
from srlm.run.records import InputError, utf8_lines

# Rough characters per token of English text for BPE tokenizers such as Llama's and SmolLM2's;
# only for counting likely over-long records, never for dropping any.
CHARS_PER_TOKEN = 4
# Stands in for a broken judge template so that EFT records are still checked.
FALLBACK_TEMPLATE = "{prompt}\n\n{response}"
# Loader failures on malformed content that is not an InputError (e.g. a JSON list where an
# object belongs in a .json file): reported as a problem of that source, not a traceback.
READ_ERRORS = (InputError, OSError, ValueError, TypeError, AttributeError, KeyError, IndexError)


def source_name(source: str) -> str:
    """'pandalm:dir/test.json' -> 'test': the <source> part of eval/human_pairs/<source>."""
    base = os.path.basename(source.split(":", 1)[-1])
    return re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(base)[0])


class _Check:
    def __init__(self, cfg):
        self.cfg = cfg
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.counts: dict[str, Any] = {}
        self.files: set[str] = set()
        self.limit = CHARS_PER_TOKEN * cfg.sft.max_length

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"[{key}] {message}")

    def read_files(self, key: str, source: str) -> int | None:
        """Open every local file of `source`: None (and a problem or note) if it cannot be
        read as UTF-8 text, else its number of blank lines."""
        if source.startswith("hf:"):
            self.notes.append(f"{key}: {source} not checked (a Hugging Face dataset is read when its stage runs)")
            return None
        blank = 0
        for path in loaders.source_files(source):
            if not os.path.exists(path):
                self.problem(key, f"{path}: file not found")
                return None
            if os.path.isdir(path):
                self.problem(key, f"{path}: is a directory, not a file")
                return None
            try:
                blank += _utf8_blank_lines(path)
            except InputError as e:
                self.problem(key, str(e))
                return None
            except OSError as e:
                self.problem(key, f"{path}: cannot be read ({e.strerror or e})")
                return None
            self.files.add(os.path.abspath(path))
        return blank

    def load(self, key: str, source: str, loader: Callable[[], Any]) -> Any:
        """loader() for one source; a failure becomes a problem of `key` and returns None."""
        try:
            return loader()
        except READ_ERRORS as e:
            msg = str(e) if isinstance(e, InputError) else f"{source}: cannot be read ({type(e).__name__}: {e})"
            self.problem(key, msg)
            return None

    def over_long(self, lengths) -> int:
        return sum(n > self.limit for n in lengths)

    def model(self, key: str, name: str, gguf_file: str | None = None) -> None:
        if name.startswith("openai:"):
            self.notes.append(f"{key}: {name} is a served model, not checked")
            return
        try:
            ref = modeling.resolve(name, gguf_file)
        except InputError as e:
            self.problem(key, str(e))
            return
        if ref.gguf_file and os.path.isdir(ref.path) and not os.path.isfile(os.path.join(ref.path, ref.gguf_file)):
            self.problem(key, f"{ref}: GGUF file not found")
        elif not os.path.exists(ref.path):
            self.notes.append(f"{key}: {name} taken as a Hugging Face Hub id (not checked offline)")


def _utf8_blank_lines(path: str) -> int:
    """Blank lines of a text file; bytes that are not UTF-8 raise InputError with their line
    and byte offset (line by line: a '\\n' byte never occurs inside a UTF-8 sequence)."""
    return sum(not line.strip() for _, line in utf8_lines(path))


def check_inputs(cfg) -> dict:
    """Open and validate every input `cfg` names, without loading any model. Raises one
    InputError listing every problem found; returns {group/name: count} (see the module doc)."""
    c = _Check(cfg)
    _check_models(c, cfg)
    template = _check_template(c, cfg)
    _check_seed(c, cfg, template)
    _check_eval(c, cfg)
    if cfg.prompts.source == "file" and cfg.prompts.file:
        _check_prompt_set(c, "prompts.file", cfg.prompts.file, "prompts/file")
    if cfg.eft_build.enabled:
        _check_eft_build(c, cfg)
    from srlm.stages import BY_NAME, runs

    if runs(BY_NAME["human_pairs"], cfg) and cfg.pairs.human_train:  # methods dpo_human and rlhf
        _check_human_train(c, cfg)
    if c.problems:
        n = len(c.problems)
        if n == 1:
            raise InputError(c.problems[0])
        raise InputError(f"{n} problems in the inputs the config names (nothing was run):\n  "
                         + "\n  ".join(c.problems))
    return {**c.counts, "checks/files": len(c.files), "checks/over_long_chars": c.limit, "checks/notes": c.notes}


def _check_models(c: _Check, cfg) -> None:
    c.model("model.name_or_path", cfg.model.name_or_path, cfg.model.gguf_file)
    if cfg.prompts.model:
        c.model("prompts.model", cfg.prompts.model)
    if cfg.eval.judge != "self":
        c.model("eval.judge", cfg.eval.judge)
    if cfg.eft_build.enabled and cfg.eft_build.judge != "M0":
        c.model("eft_build.judge", cfg.eft_build.judge)
    # A frozen judge (RLAIF) named by path, Hub id or endpoint; M<k> is a model of the run itself.
    judge = cfg.judge.model
    if judge and not (judge[:1] == "M" and judge[1:].isdigit()):
        c.model("judge.model", judge)


def _check_template(c: _Check, cfg) -> str | None:
    source = cfg.judge.template
    if c.read_files("judge.template", source) is None:
        return None
    return c.load("judge.template", source, lambda: rubric.load_template(source))


def _check_seed(c: _Check, cfg, template: str | None) -> None:
    for key, sources in (("data.ift", cfg.data.ift), ("data.eft", cfg.data.eft)):
        kind = key.split(".")[1]
        c.counts[f"data/{kind}_examples"] = c.counts[f"data/{kind}_empty"] = 0
        c.counts[f"data/{kind}_over_long"] = 0
        for source in sources:
            blank = c.read_files(key, source)
            if blank is None:
                continue
            if kind == "ift":
                rows = c.load(key, source, lambda s=source: loaders.load_ift([s]))
                lengths = [len(r.prompt) + len(r.response) for r in rows or []]
            else:
                rows = c.load(key, source, lambda s=source: loaders.load_eft([s], template or FALLBACK_TEMPLATE))
                lengths = [len(r.prompt) + len(r.judgment) for r in rows or []]
            if rows is None:
                continue
            c.counts[f"data/{kind}_examples"] += len(rows)
            c.counts[f"data/{kind}_empty"] += blank
            c.counts[f"data/{kind}_over_long"] += c.over_long(lengths)


def _check_eval(c: _Check, cfg) -> None:
    for source in cfg.eval.human_prefs:
        key, name = "eval.human_prefs", source_name(source)
        blank = c.read_files(key, source)
        if blank is None:
            continue
        path = loaders.source_files(source)[0] if source == "embedded:human_prefs" else source
        got = c.load(key, source, lambda p=path: loaders.load_human_pairs(p))
        if got is None:
            continue
        pairs, stats = got
        for group, n in (("human_pairs", len(pairs)),
                         ("human_pairs_empty", blank + stats.get("skipped_empty", 0)),
                         ("human_pairs_no_majority", stats.get("skipped_no_majority", 0)),
                         ("human_pairs_over_long", c.over_long(
                             len(p.prompt) + max(len(p.response_a), len(p.response_b)) for p in pairs))):
            c.counts[f"eval/{group}/{name}"] = c.counts.get(f"eval/{group}/{name}", 0) + n
    _check_prompt_set(c, "eval.prompts", cfg.eval.prompts, "eval/prompts")


def _check_prompt_set(c: _Check, key: str, source: str, group: str) -> None:
    blank = c.read_files(key, source)
    if blank is None:
        return
    rows = c.load(key, source, lambda: loaders.load_prompts(source))
    if rows is None:
        return
    c.counts[group] = len(rows)
    c.counts[f"{group}_empty"] = blank
    c.counts[f"{group}_over_long"] = c.over_long(len(r["prompt"]) for r in rows)


def _check_eft_build(c: _Check, cfg) -> None:
    limit = cfg.eft_build.max_chars or c.limit  # max_chars: exactly the groups the build drops
    groups = empty = over = ties = 0
    for source in cfg.eft_build.sources:
        blank = c.read_files("eft_build.sources", source)
        if blank is None:
            continue
        got = c.load("eft_build.sources", source,
                     lambda s=source: loaders.load_groups([s], cfg.eft_build.first_turn_only))
        if got is None:
            continue
        found, stats = got
        groups += len(found)
        empty += blank + stats.get("eft_build/input_skipped_empty", 0)
        ties += stats.get("eft_build/input_ties_skipped", 0)
        over += sum(len(g.prompt) + max(map(len, g.replies)) > limit for g in found)
    c.counts.update({"eft_build/groups": groups, "eft_build/groups_empty": empty,
                     "eft_build/groups_over_long": over, "eft_build/ties_skipped": ties})


def _check_human_train(c: _Check, cfg) -> None:
    # The same loader as the human_pairs stage (loaders.load_groups), so they cannot disagree.
    source = cfg.pairs.human_train
    if c.read_files("pairs.human_train", source) is None:
        return
    got = c.load("pairs.human_train", source, lambda: loaders.load_groups([source], first_turn_only=True))
    if got is not None:
        c.counts["human_pairs/groups_in"] = len(got[0])
