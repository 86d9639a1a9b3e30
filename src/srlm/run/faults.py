"""Fault points for crash tests: a run can be killed with SIGKILL at its N-th durable write or
training step, and the rerun must end with the same artifacts as an uninterrupted run
(tests/test_faults.py). No paper section; no output file of its own.

    SRLM_FAULT_AT=N     the N-th call of point() in this process sends SIGKILL to the process
    SRLM_FAULT_LOG=F    every point() appends one line "name detail" to F (how many points an
                        uninterrupted run passes, and where)
    SRLM_FAULT_MATCH=R  optional: count only points whose line "name detail" matches the regular
                        expression R (a rerun skips finished stages, so its N-th point overall
                        is hard to predict; "the first checkpoint of dpo_1" is not)

The environment is read once at import, so point() is one truth test when neither is set.
Counts are per process: under `accelerate launch` each rank counts its own.
"""

from __future__ import annotations

import os
import re
import signal

_AT = int(os.environ.get("SRLM_FAULT_AT") or 0)
_LOG = os.environ.get("SRLM_FAULT_LOG") or None
_MATCH = re.compile(os.environ["SRLM_FAULT_MATCH"]) if os.environ.get("SRLM_FAULT_MATCH") else None
_ACTIVE = bool(_AT or _LOG)
_count = 0


def point(name: str, detail: str = "") -> None:
    """A place where a crash must be survivable: log it, and die here if it is the N-th."""
    if not _ACTIVE:
        return
    global _count
    line = f"{name} {detail}".rstrip()
    if _LOG:
        # One short append per point; written before the kill so the log names the fatal point.
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    if _AT and (_MATCH is None or _MATCH.search(line)):
        _count += 1
        if _count == _AT:
            os.kill(os.getpid(), signal.SIGKILL)


_last_event: tuple | None = None


def _trainer_faults():
    from transformers import TrainerCallback

    class TrainerFaults(TrainerCallback):
        """Fault points inside training: after every optimizer step and after every checkpoint.
        One point per event even if the callback is registered twice (a test may add it to
        transformers' default callbacks while a stage also passes it)."""

        def _point(self, name: str, args, state) -> None:
            global _last_event
            event = (name, args.output_dir, state.global_step)
            if event == _last_event:
                return
            _last_event = event
            point(name, f"{args.output_dir} step {state.global_step}")

        def on_step_end(self, args, state, control, **kwargs):
            if _ACTIVE:
                self._point("train_step", args, state)

        def on_save(self, args, state, control, **kwargs):
            if _ACTIVE:
                self._point("train_save", args, state)

    TrainerFaults.__module__, TrainerFaults.__qualname__ = __name__, "TrainerFaults"
    return TrainerFaults


def __getattr__(name: str):
    # TrainerFaults subclasses transformers' TrainerCallback; built on first use so that
    # records.py (which calls point()) does not import transformers.
    if name == "TrainerFaults":
        cls = _trainer_faults()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
