"""A quiet console: one progress line per stage, with its ETA and the whole run's.

    [3/12] iter 1 · judge   |████▌     | 2/4 chunks [01:10<01:10] run 04:12, ~09:30 left

Libraries' own output (weight-loading bars, dataset maps, TRL's logged dicts, warnings) goes to
DIR/logs/<stage>.log instead of the console; `--verbose` brings it back. The run's ETA is the
elapsed time scaled by the stages still to run, weighted by what each kind of stage costs on
the embedded default (a rough guide, refined as the run goes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings

from tqdm.auto import tqdm

LIBRARIES = ("transformers", "trl", "datasets", "peft", "accelerate", "huggingface_hub", "torch", "py.warnings")
# Relative cost of a stage on the embedded default (measured: SFT ~3.4 min, an iteration ~2.7 min
# of which DPO ~0.6 and judging ~1.1); eval is counted with the stage it follows.
WEIGHTS = {"eft_build": 3.0, "sft": 4.0, "prompts": 0.5, "sample": 0.8, "judge": 1.2, "pairs": 0.05, "dpo": 0.8,
           "eval": 1.5, "meta_judge": 1.5, "judge_prev": 1.2, "cream_rewards": 0.4, "scir_pairs": 0.4,
           "seed_prompts": 0.05, "spin_pairs": 0.05, "human_pairs": 0.05, "cream_pairs": 0.05, "judge_pairs": 0.05,
           "dno_reference": 0.05, "dno_pairs": 0.05,
           # rlhf.yaml on the embedded model: the reward model ~6x a DPO stage, RLOO ~12x.
           "reward_model": 4.5, "rl": 9.0}


class _State:
    verbose = True  # library output untouched unless a run sets up a quiet console
    label = ""
    run_started: float | None = None
    done_weight = 0.0
    total_weight = 0.0
    console = None  # the real stderr while a quiet stage redirects sys.stderr to its log


STATE = _State()


def start_run(schedule_names: list[str], verbose: bool = False) -> None:
    STATE.verbose = verbose
    STATE.run_started = time.time()
    STATE.done_weight = 0.0
    STATE.total_weight = sum(WEIGHTS.get(n, 1.0) for n in schedule_names) or 1.0
    if not verbose:
        # srlm's own warnings stay on the console while a stage sends stderr to its log.
        own = logging.getLogger("srlm")
        if not any(getattr(h, "_srlm_console", False) for h in own.handlers):
            handler = logging.StreamHandler(sys.__stderr__)
            handler.setFormatter(logging.Formatter("srlm: %(levelname)s: %(message)s"))
            handler.setLevel(logging.WARNING)
            handler._srlm_console = True
            own.addHandler(handler)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            import datasets

            datasets.disable_progress_bars()
        except ImportError:
            pass
        try:
            from transformers.utils import logging as tlog

            tlog.disable_progress_bar()
            tlog.set_verbosity_error()
        except ImportError:
            pass


def finish_stage(name: str) -> None:
    STATE.done_weight += WEIGHTS.get(name, 1.0)


def run_eta() -> str:
    if STATE.run_started is None or STATE.done_weight <= 0:
        return ""
    elapsed = time.time() - STATE.run_started
    left = elapsed * max(0.0, STATE.total_weight - STATE.done_weight) / STATE.done_weight
    return f"run {_clock(elapsed)}, ~{_clock(left)} left"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def bar(total: int, unit: str, desc: str = "", disable: bool = False) -> tqdm:
    """The stage's progress bar: labelled with the stage, showing the run's ETA."""
    label = STATE.label or desc
    # The console, even while a quiet stage sends the libraries' stderr to its log.
    console = STATE.console or sys.stderr
    b = tqdm(total=total, unit=unit, desc=label, disable=disable, dynamic_ncols=True, leave=True, file=console)
    eta = run_eta()
    if eta:
        b.set_postfix_str(eta, refresh=False)
    return b


@contextlib.contextmanager
def stage(log_path: str, label: str):
    """While a stage runs: its label for the progress bars, and library output into its log."""
    STATE.label = label
    handlers = []
    saved = {}
    redirect = contextlib.nullcontext()
    log_file = None
    if not STATE.verbose:
        # Libraries that print bars straight to stderr (GGUF conversion, dataset maps) write to
        # the stage log; srlm's own bars keep the console.
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        log_file = open(log_path, "a", encoding="utf-8")
        STATE.console = sys.stderr
        redirect = contextlib.redirect_stderr(log_file)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        handler = logging.FileHandler(log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handlers.append(handler)
        logging.captureWarnings(True)
        for name in LIBRARIES:
            lg = logging.getLogger(name)
            saved[name] = (lg.propagate, list(lg.handlers))
            lg.handlers = [handler]
            lg.propagate = False
    try:
        with redirect, warnings.catch_warnings():
            if not STATE.verbose:
                warnings.simplefilter("default")
            yield
    finally:
        STATE.label = ""
        STATE.console = None
        if log_file is not None:
            log_file.close()
        for name, (prop, hs) in saved.items():
            lg = logging.getLogger(name)
            lg.propagate, lg.handlers = prop, hs
        for h in handlers:
            h.close()
        if not STATE.verbose:
            logging.captureWarnings(False)


def trainer_callback():
    """A transformers TrainerCallback: the training stage's bar (steps) and its logged dicts
    written to the stage log instead of printed."""
    from transformers import TrainerCallback

    class TrainerProgress(TrainerCallback):
        def __init__(self):
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = bar(state.max_steps, "step")
                self.bar.update(state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                logging.getLogger("trl").info("step %d: %s", state.global_step, logs)
                if self.bar is not None and "loss" in logs:
                    self.bar.set_postfix_str(f"loss {logs['loss']:.3g}" + (f" · {run_eta()}" if run_eta() else ""))

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return TrainerProgress()


def quiet_trainer(trainer) -> None:
    """Swap the HF Trainer's console output (its tqdm bar and printed log dicts) for ours."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(trainer_callback())
