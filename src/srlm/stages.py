"""The table of stages: one row per stage, read by both the pipeline (`srlm run`) and the CLI
(one subcommand per stage). A stage's row says what it reads, what it writes, which model it
generates with, and which config values its output depends on; pipeline.py does the rest
(skipping fresh outputs, rerunning stale ones, markers, metrics). A row's work is a function of
the loop's module of the row's name (srlm/loop/<stage>.py) or of its method's module
(srlm/methods/<first of its methods>.py), imported when the row runs (tests/test_layers.py).

    eft_build (optional)  ranked human data --M0 judges--> DIR/eft/eft.jsonl
    sft                   M0 + IFT + EFT                  -> models/M1
    for t in 1..T:
      prompts             M_t self-instruct               -> iter_t/prompts.jsonl
      sample              M_t, N candidates per prompt    -> iter_t/candidates.jsonl
      judge               M_t (or judge.model), K rubric judgments each -> iter_t/judgments.jsonl
      meta_judge          (meta_rewarding) M_t meta-judges its judgments -> iter_t/meta_judgments.jsonl
      pairs               highest vs lowest               -> iter_t/pairs.jsonl
      judge_pairs         (meta_rewarding) best vs worst judgment -> iter_t/judge_pairs.jsonl
      dpo                 DPO on the pairs                -> models/M_{t+1}

Other methods (docs/METHODS.md) bring rows of their own. A row of the loop runs under every
method; a method's row names its methods (`methods`) and the loop's rows it stands in for
(`replaces`), which that method's runs then leave out (runs() below). No list of methods decides
which rows run: a new method adds its rows, and where it reuses another method's row (DNO runs
SPIN's seed_prompts, RLHF dpo_human's human_pairs) adds its name to that row's `methods`
(docs/METHODS.md, "How to add a method").
`enabled` is for settings (eft_build.enabled, cream.reward), `in_iteration` for iterations
(meta.judge_iterations):
    spin:       seed_prompts (seed IFT subset) -> sample -> spin_pairs (gold vs sample) -> dpo
    dpo_human:  human_pairs (pairs.human_train minus evaluation prompts) -> dpo, one iteration
    rlhf:       human_pairs -> reward_model (Bradley-Terry on a train split of the pairs, held-out
                accuracy beside the length heuristic -> iter_t/reward_model) -> rl (RLOO or GRPO
                against it, TRL ships no PPO -> models/M_{t+1}) in place of dpo, one iteration
    rlaif:      the loop's rows; judge.model names the frozen judge (no rows of its own)
    cream:      prompts -> sample -> cream_rewards (implicit rewards of M_t and M_{t-1}; or, with
                cream.reward=judge, judge + judge_prev: M_{t-1}, M0 for t=1, judges too) ->
                cream_pairs (pairs with the rankings' consistency as confidence) -> dpo (weighted)
    scir:       prompts -> sample -> judge -> scir_pairs (pairs the DPO implicit reward also orders
                chosen-first) -> dpo
    dno:        seed_prompts (reference set subset) -> sample -> dno_reference (each prompt's reference
                answer -> iter_t/references.jsonl) -> judge (candidates and references) -> dno_pairs
                (every pair above a margin, plus replay of earlier iterations' pairs) -> dpo
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from srlm.data import loaders
from srlm.engines.modeling import ModelRef, resolve
from srlm.run.config import Config
from srlm.run.rundir import RunDir

# Config values that change generated text; server plumbing (timeouts, concurrency, keys) does not.
GENERATION_KEYS = ("seed", "model.dtype", "backend.name", "backend.batch_size", "backend.base_url",
                   "backend.served_model")


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    per_iteration: bool
    output: Callable[[RunDir, int], str]
    inputs: Callable[[Config, RunDir, int], list[str]]
    keys: tuple[str, ...]  # config values (sections or dotted keys) the output depends on
    run: Callable  # run(cfg, rd, t, backend) -> stats
    model: Callable[[Config, RunDir, int], "ModelRef | str | None"] | None = None  # generation model, if any
    # Whose row: () for a row of the loop, run by every method unless one of the method's rows
    # replaces it; else the methods (config `method`) whose runs have this row.
    methods: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()  # a method's row: the loop's rows it stands in for under its methods
    enabled: Callable[[Config], bool] = lambda cfg: True  # a setting that leaves the row out
    # Which iterations a per-iteration stage runs in (Meta-Rewarding trains the judge in some only).
    in_iteration: Callable[[Config, int], bool] = lambda cfg, t: True
    makes_model: bool = False  # its output is a model (M1, M_{t+1}): evaluation follows it


def runs(stage: Stage, cfg: Config) -> bool:
    """Whether a run with this config has the row: a method's row under its methods, a row of the
    loop unless a row of the run's method replaces it; either only where `enabled`."""
    if not stage.enabled(cfg):
        return False
    if stage.methods:
        return cfg.method in stage.methods
    return not any(stage.name in s.replaces for s in STAGES if cfg.method in s.methods and s.enabled(cfg))


def m0(cfg: Config) -> ModelRef:
    return resolve(cfg.model.name_or_path, cfg.model.gguf_file)


def model_ref(rd: RunDir, t: int) -> ModelRef:
    return ModelRef(rd.model(t))


def _files(sources: list[str]) -> list[str]:
    return [f for s in sources for f in loaders.source_files(s)]


def _template(cfg: Config) -> list[str]:
    return loaders.source_files(cfg.judge.template)


def _model_input(ref: ModelRef | str) -> str:
    return str(ref) if isinstance(ref, ModelRef) else ref


def eval_prompt_files(cfg: Config) -> list[str]:
    return _files([cfg.eval.prompts, *cfg.eval.human_prefs])


# -- the stages' run functions (imported lazily: training stages pull in TRL) -------------------

def _run_eft_build(cfg, rd, t, backend):
    from srlm.loop import eft_build

    return eft_build.run_stage(cfg, rd, backend)


def _run_sft(cfg, rd, t, backend):
    from srlm.loop import sft

    return sft.run(cfg, rd, m0(cfg))


def _run_prompts(cfg, rd, t, backend):
    from srlm.loop import prompts

    return prompts.run(cfg, rd, t, backend)


def _run_sample(cfg, rd, t, backend):
    from srlm.loop import sample

    return sample.run(cfg, rd, t, backend)


def judged_files(cfg: Config, rd: RunDir, t: int) -> list[str]:
    """What the judge stage scores: the candidates, and after them the reference answers of the
    dno_reference row where the run has it (DNO)."""
    return [rd.candidates(t), *([rd.references(t)] if runs(BY_NAME["dno_reference"], cfg) else [])]


def _judge_inputs(cfg: Config, rd: RunDir, t: int) -> list[str]:
    from srlm.loop import judge

    model = judge_model(cfg, rd, t)
    return [*([_model_input(model)] if model is not None else []), *judged_files(cfg, rd, t), *_template(cfg),
            *([rd.prompts(t)] if judge.reads_prompts(cfg) else [])]


def _prompts_model(cfg: Config, rd: RunDir, t: int):
    """Self-instruct's writer: prompts.model or M_t; none for prompts read from a file or the seed."""
    if cfg.prompts.source != "self_instruct":
        return None
    return resolve(cfg.prompts.model) if cfg.prompts.model else model_ref(rd, t)


def _run_judge(cfg, rd, t, backend):
    from srlm.loop import judge

    return judge.run(cfg, rd, t, backend, judged_files(cfg, rd, t))


def _run_pairs(cfg, rd, t, backend):
    from srlm.loop import pairs

    return pairs.run(cfg, rd, t)


def seed_sources(cfg: Config) -> list[str]:
    """Where seed_prompts draws from: the seed IFT data (SPIN), or DNO's reference set."""
    if cfg.method == "dno":
        from srlm.methods import dno

        return dno.reference_sources(cfg)
    return list(cfg.data.ift)


def _run_seed_prompts(cfg, rd, t, backend):
    from srlm.methods import spin

    return spin.run_prompts(cfg, rd, t, seed_sources(cfg))


def _run_dno_reference(cfg, rd, t, backend):
    from srlm.methods import dno

    return dno.run_references(cfg, rd, t)


def _run_dno_pairs(cfg, rd, t, backend):
    from srlm.methods import dno

    return dno.run_pairs(cfg, rd, t)


def _dno_pair_inputs(cfg: Config, rd: RunDir, t: int) -> list[str]:
    from srlm.methods import dno

    return [rd.candidates(t), rd.references(t), rd.judgments(t), *(p for _, p in dno.replay_sources(cfg, rd, t))]


def _run_spin_pairs(cfg, rd, t, backend):
    from srlm.methods import spin

    return spin.run_pairs(cfg, rd, t)


def _spin_pair_inputs(cfg: Config, rd: RunDir, t: int) -> list[str]:
    from srlm.methods import spin

    return [rd.prompts(t), rd.candidates(t), *_files(cfg.data.ift), *(p for _, p in spin.replay_sources(cfg, rd, t))]


def _run_meta_judge(cfg, rd, t, backend):
    from srlm.methods import meta_rewarding

    return meta_rewarding.run(cfg, rd, t, backend)


def _run_judge_pairs(cfg, rd, t, backend):
    from srlm.methods import meta_rewarding

    return meta_rewarding.run_pairs(cfg, rd, t)


def _trains_judge(cfg: Config, t: int) -> bool:
    from srlm.methods import meta_rewarding

    return meta_rewarding.trains_judge(cfg, t)


def _run_human_pairs(cfg, rd, t, backend):
    from srlm.methods import dpo_human

    return dpo_human.run(cfg, rd, t)


def _run_reward_model(cfg, rd, t, backend):
    from srlm.methods import rlhf

    return rlhf.run_reward_model(cfg, rd, t)


def _run_rl(cfg, rd, t, backend):
    from srlm.methods import rlhf

    return rlhf.run_rl(cfg, rd, t)


def _rl_prompt_inputs(cfg: Config) -> list[str]:
    """rlhf.prompts=ift reads the seed IFT prompts and drops evaluation prompts from them."""
    return [*_files(cfg.data.ift), *eval_prompt_files(cfg)] if cfg.rlhf.prompts == "ift" else []


# The rlhf section's keys each RLHF stage depends on (LoRA and checkpointing settings serve both).
_RLHF_SHARED = ("rlhf.lora", "rlhf.lora_r", "rlhf.lora_alpha", "rlhf.lora_dropout", "rlhf.gradient_checkpointing")
RLHF_REWARD_KEYS = ("rlhf.heldout_fraction", "rlhf.reward_epochs", "rlhf.reward_learning_rate",
                    "rlhf.reward_batch_size", "rlhf.reward_per_device_batch_size", "rlhf.reward_max_length",
                    *_RLHF_SHARED)
RLHF_RL_KEYS = ("rlhf.trainer", "rlhf.prompts", "rlhf.max_prompts", "rlhf.num_generations",
                "rlhf.max_completion_length", "rlhf.temperature", "rlhf.learning_rate", "rlhf.beta",
                "rlhf.batch_size", "rlhf.per_device_batch_size", "rlhf.epochs", *_RLHF_SHARED)


def _run_judge_prev(cfg, rd, t, backend):
    from srlm.methods import cream

    return cream.run_judge_prev(cfg, rd, t, backend)


def _run_cream_pairs(cfg, rd, t, backend):
    from srlm.methods import cream

    return cream.run_pairs(cfg, rd, t)


def previous_model(cfg: Config, rd: RunDir, t: int) -> ModelRef:
    """CREAM's previous model of iteration t: M0 (before SFT) for t = 1, else M_{t-1}."""
    return m0(cfg) if t == 1 else model_ref(rd, t - 1)


def implicit_reference(cfg: Config, rd: RunDir, t: int) -> ModelRef:
    """SCIR: the model M_t was trained from, the reference of its DPO implicit reward: M0 for M1
    (SFT's start), else where iteration t-1's DPO started (M1 with dpo.init=anchor, else M_{t-1})."""
    return m0(cfg) if t == 1 else ModelRef(_dpo_start(cfg, rd, t - 1))


def _cream_implicit(cfg: Config) -> bool:
    return cfg.method == "cream" and cfg.cream.reward == "implicit"


def cream_models(cfg: Config, rd: RunDir, t: int) -> tuple[tuple, tuple]:
    """CREAM's implicit rewards: ((M_t, its reference), (previous model, its reference)); the
    previous model of iteration 1 is M0, scored by its likelihood (reference None)."""
    previous = (m0(cfg), None) if t == 1 else (model_ref(rd, t - 1), implicit_reference(cfg, rd, t - 1))
    return (model_ref(rd, t), implicit_reference(cfg, rd, t)), previous


def _run_cream_rewards(cfg, rd, t, backend):
    from srlm.methods import cream

    return cream.run_rewards(cfg, rd, t, *cream_models(cfg, rd, t))


def _cream_pair_inputs(cfg: Config, rd: RunDir, t: int) -> list[str]:
    if _cream_implicit(cfg):
        return [rd.candidates(t), rd.implicit_rewards(t)]
    return [rd.candidates(t), rd.judgments(t), rd.judgments_prev(t)]


def _run_scir_pairs(cfg, rd, t, backend):
    from srlm.methods import scir

    return scir.run_pairs(cfg, rd, t, implicit_reference(cfg, rd, t))


def _run_dpo(cfg, rd, t, backend):
    from srlm.loop import dpo

    # Meta-Rewarding's judge pairs join the actor pairs in the iterations where the judge trains.
    return dpo.run(cfg, rd, t, judge_pairs=rd.judge_pairs(t) if _trains_judge(cfg, t) else None)


def _eft_judge(cfg: Config, rd: RunDir, t: int):
    spec = cfg.eft_build.judge
    if spec == "M0":
        return m0(cfg)
    if spec.startswith("openai:"):
        return spec
    return resolve(spec)


def judge_model(cfg: Config, rd: RunDir, t: int):
    """The model that judges iteration t: M_t itself (judge.model empty, the paper), or a frozen
    judge (RLAIF): M0, M1, a model path / Hub id / embedded model, or an openai: endpoint; none
    when the checker alone scores (judge.source=verifier)."""
    if cfg.judge.source == "verifier":
        return None
    spec = cfg.judge.model
    if not spec:
        return model_ref(rd, t)
    if spec == "M0":
        return m0(cfg)
    if spec[:1] == "M" and spec[1:].isdigit():
        return ModelRef(rd.model(int(spec[1:])))
    if spec.startswith("openai:"):
        return spec
    return resolve(spec)


def _dpo_start(cfg: Config, rd: RunDir, t: int) -> str:
    return rd.model(1 if cfg.dpo.init == "anchor" else t)


STAGES: list[Stage] = [
    Stage("eft_build", "EFT from ranked human data: a model judges Open Assistant / pairwise replies, the judgments "
          "that order them as the humans did are kept -> eft/eft.jsonl (runs when eft_build.enabled)",
          False, lambda rd, t: rd.eft_built,
          lambda cfg, rd, t: [*_files([_src for _src in cfg.eft_build.sources]), *eval_prompt_files(cfg),
                              *_template(cfg), _model_input(_eft_judge(cfg, rd, t))],
          ("eft_build", "judge.template", "judge.temperature", "judge.top_p", "judge.max_new_tokens",
           "judge.stop_repetition", "eval.prompts", "eval.human_prefs", *GENERATION_KEYS),
          _run_eft_build, model=_eft_judge, enabled=lambda cfg: cfg.eft_build.enabled),
    Stage("sft", "M0 -> M1: supervised fine-tuning on the seed IFT + EFT data", False,
          lambda rd, t: rd.model(1),
          lambda cfg, rd, t: [_model_input(m0(cfg)), *_files(cfg.data.ift), *_files(cfg.data.eft), *_template(cfg),
                              *([rd.eft_built] if cfg.eft_build.enabled else [])],
          ("seed", "model", "data", "sft", "judge.template", "eft_build.enabled", "eft_build.max_examples"),
          _run_sft, makes_model=True),
    Stage("prompts", "iteration t: new prompts by few-shot self-instruct -> iter_<t>/prompts.jsonl", True,
          lambda rd, t: rd.prompts(t),
          lambda cfg, rd, t: [_model_input(resolve(cfg.prompts.model)) if cfg.prompts.model else rd.model(t),
                              *_files(cfg.data.ift), *([cfg.prompts.file] if cfg.prompts.source == "file" else []),
                              *(eval_prompt_files(cfg) if cfg.prompts.verifiable_max else [])],
          ("prompts", "data.ift", "sample.max_new_tokens", *GENERATION_KEYS), _run_prompts, model=_prompts_model),
    Stage("seed_prompts", "iteration t (spin, dno): a seeded subset of the seed IFT prompts (dno: of its reference "
          "set) -> iter_<t>/prompts.jsonl",
          True, lambda rd, t: rd.prompts(t), lambda cfg, rd, t: _files(seed_sources(cfg)),
          ("seed", "data.ift", "prompts.num_prompts", "dno.reference"), _run_seed_prompts,
          methods=("spin", "dno"), replaces=("prompts",)),
    Stage("sample", "iteration t: N candidates per prompt from M_t -> iter_<t>/candidates.jsonl", True,
          lambda rd, t: rd.candidates(t), lambda cfg, rd, t: [rd.model(t), rd.prompts(t)],
          ("sample", *GENERATION_KEYS), _run_sample, model=lambda cfg, rd, t: model_ref(rd, t)),
    Stage("dno_reference", "iteration t (dno): each prompt's reference answer (dno.reference), one more candidate "
          "for the judge -> iter_<t>/references.jsonl", True, lambda rd, t: rd.references(t),
          lambda cfg, rd, t: [rd.prompts(t), *_files(seed_sources(cfg))],
          ("data.ift", "dno.reference", "sample.n"), _run_dno_reference, methods=("dno",)),
    Stage("judge", "iteration t: K rubric judgments per candidate by M_t (or the frozen judge.model) -> "
          "iter_<t>/judgments.jsonl", True,
          lambda rd, t: rd.judgments(t),
          _judge_inputs,
          ("judge", *GENERATION_KEYS), _run_judge, model=judge_model),
    Stage("judge_prev", "iteration t (cream): the previous model (M0 for t=1, else M_{t-1}) judges iteration t's "
          "candidates -> iter_<t>/judgments_prev.jsonl", True, lambda rd, t: rd.judgments_prev(t),
          lambda cfg, rd, t: [_model_input(previous_model(cfg, rd, t)), rd.candidates(t), *_template(cfg)],
          ("judge", *GENERATION_KEYS), _run_judge_prev, model=previous_model,
          methods=("cream",), enabled=lambda cfg: cfg.cream.reward == "judge"),
    Stage("cream_rewards", "iteration t (cream): implicit rewards log pi - log pi_ref of the candidates under M_t "
          "and under the previous model (M0's likelihood for t=1) -> iter_<t>/implicit_rewards.jsonl", True,
          lambda rd, t: rd.implicit_rewards(t),
          lambda cfg, rd, t: [rd.candidates(t), *(_model_input(m) for pair in cream_models(cfg, rd, t)
                                                   for m in pair if m is not None)],
          ("seed", "model.dtype", "dpo.init", "cream.reward"), _run_cream_rewards,
          methods=("cream",), replaces=("judge",), enabled=lambda cfg: cfg.cream.reward == "implicit"),
    Stage("meta_judge", "iteration t (meta_rewarding, t in meta.judge_iterations): M_t compares every pair of its "
          "judgments of one candidate per prompt, in both orders -> iter_<t>/meta_judgments.jsonl", True,
          lambda rd, t: rd.meta_judgments(t),
          lambda cfg, rd, t: [rd.model(t), rd.candidates(t), rd.judgments(t), *_template(cfg)],
          ("meta.temperature", "meta.top_p", "meta.max_new_tokens", "meta.chunk_size", "meta.scoring", "judge.template",
           "judge.stop_repetition", *GENERATION_KEYS), _run_meta_judge, model=lambda cfg, rd, t: model_ref(rd, t),
          methods=("meta_rewarding",), in_iteration=_trains_judge),
    Stage("pairs", "iteration t: highest vs lowest mean score per prompt -> iter_<t>/pairs.jsonl", True,
          lambda rd, t: rd.pairs(t), lambda cfg, rd, t: [rd.candidates(t), rd.judgments(t)],
          ("pairs",), _run_pairs),
    Stage("spin_pairs", "iteration t (spin): the seed's gold answer over M_t's sample, plus earlier iterations' "
          "SPIN pairs -> iter_<t>/pairs.jsonl", True, lambda rd, t: rd.pairs(t), _spin_pair_inputs,
          ("spin", "data.ift"), _run_spin_pairs, methods=("spin",), replaces=("judge", "pairs")),
    Stage("dno_pairs", "iteration t (dno): every pair of candidates and reference whose score gap reaches the "
          "margin, repetitive samples as negatives, plus replayed pairs of earlier iterations -> "
          "iter_<t>/pairs.jsonl", True, lambda rd, t: rd.pairs(t), _dno_pair_inputs,
          ("seed", "dno", "pairs.min_valid_judgments"), _run_dno_pairs, methods=("dno",), replaces=("pairs",)),
    Stage("human_pairs", "iteration t (dpo_human, rlhf): human preference pairs from pairs.human_train, evaluation "
          "prompts removed -> iter_<t>/pairs.jsonl", True, lambda rd, t: rd.pairs(t),
          lambda cfg, rd, t: [*_files([cfg.pairs.human_train]), *eval_prompt_files(cfg)],
          ("seed", "pairs.human_train", "pairs.max_human_train", "eft_build.near_duplicate_threshold",
           "eval.prompts", "eval.human_prefs"), _run_human_pairs,
          methods=("dpo_human", "rlhf"), replaces=("prompts", "sample", "judge", "pairs")),
    Stage("cream_pairs", "iteration t (cream): highest vs lowest, each pair weighted by its rankings' consistency "
          "(Kendall tau of the current and the previous model's rankings) -> iter_<t>/pairs.jsonl", True, lambda rd, t: rd.pairs(t),
          _cream_pair_inputs, ("pairs", "cream"), _run_cream_pairs, methods=("cream",), replaces=("pairs",)),
    Stage("scir_pairs", "iteration t (scir): highest vs lowest, kept where M_t's DPO implicit reward (against the "
          "model it trained from) also prefers chosen -> iter_<t>/pairs.jsonl", True, lambda rd, t: rd.pairs(t),
          lambda cfg, rd, t: [rd.candidates(t), rd.judgments(t), rd.model(t),
                              _model_input(implicit_reference(cfg, rd, t))],
          ("pairs", "seed", "model.dtype", "dpo.beta", "dpo.max_length", "dpo.init"), _run_scir_pairs,
          methods=("scir",), replaces=("pairs",)),
    Stage("judge_pairs", "iteration t (meta_rewarding, t in meta.judge_iterations): position-weighted Elo over "
          "the meta-judgments, best vs worst judgment -> iter_<t>/judge_pairs.jsonl", True,
          lambda rd, t: rd.judge_pairs(t),
          lambda cfg, rd, t: [rd.candidates(t), rd.judgments(t), rd.meta_judgments(t), rd.pairs(t), *_template(cfg)],
          ("seed", "meta.max_chosen_words", "meta.judge_pair_fraction", "judge.template"), _run_judge_pairs,
          methods=("meta_rewarding",), in_iteration=_trains_judge),
    Stage("dpo", "iteration t: DPO on iter_<t>/pairs.jsonl (and judge_pairs.jsonl) -> models/M<t+1>", True,
          lambda rd, t: rd.model(t + 1),
          lambda cfg, rd, t: [rd.pairs(t), *([rd.judge_pairs(t)] if _trains_judge(cfg, t) else []),
                              _dpo_start(cfg, rd, t)],
          ("seed", "model.dtype", "dpo"), _run_dpo, makes_model=True),
    Stage("reward_model", "iteration t (rlhf): a Bradley-Terry reward model from M_t (TRL's RewardTrainer) on a "
          "seeded train split of iter_<t>/pairs.jsonl, held-out accuracy beside the length heuristic -> "
          "iter_<t>/reward_model", True, lambda rd, t: rd.reward_model(t),
          lambda cfg, rd, t: [rd.pairs(t), rd.model(t)], ("seed", "model.dtype", *RLHF_REWARD_KEYS),
          _run_reward_model, methods=("rlhf",)),
    Stage("rl", "iteration t (rlhf): M_t optimised against the reward model with RLOO or GRPO (rlhf.trainer; TRL "
          "ships no PPO) -> models/M<t+1>", True, lambda rd, t: rd.model(t + 1),
          lambda cfg, rd, t: [rd.pairs(t), rd.reward_model(t), rd.model(t), *_rl_prompt_inputs(cfg)],
          ("seed", "model.dtype", "data.max_ift", "eft_build.near_duplicate_threshold", *RLHF_RL_KEYS), _run_rl,
          methods=("rlhf",), replaces=("dpo",), makes_model=True),
]
BY_NAME = {s.name: s for s in STAGES}


def schedule(cfg: Config) -> list[tuple[Stage, int]]:
    """Every (stage, iteration) of a run, in the order they run; t = 0 before the iterations."""
    rows = [s for s in STAGES if runs(s, cfg)]
    out = [(s, 0) for s in rows if not s.per_iteration]
    for t in range(1, cfg.iterations + 1):
        out += [(s, t) for s in rows if s.per_iteration and s.in_iteration(cfg, t)]
    return out


def downstream(cfg: Config, stage: Stage, t: int) -> list[tuple[Stage, int]]:
    """What depends on (stage, t): everything after it in the schedule (within an iteration the
    stages form a chain, and each iteration starts from the previous one's model)."""
    order = schedule(cfg)
    for i, (s, ti) in enumerate(order):
        if s.name == stage.name and ti == t:
            return order[i + 1:]
    return []
