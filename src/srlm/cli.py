"""The `srlm` command: the whole loop (`srlm run`) or any single stage on a run directory."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap

from srlm.config import ConfigError, describe, load_config

DESCRIPTION = """\
srlm: Self-Rewarding Language Models (Yuan et al., 2024).

One model writes answers and judges them with an additive 0-5 rubric; each iteration it is
trained with DPO on its own judgements. `srlm run` does everything:

  M0 --sft(IFT+EFT)--> M1 ; for t in 1..T: prompts -> sample -> judge -> pairs -> dpo => M_{t+1}

With no config it runs the embedded default (SmolLM2-135M-Instruct, offline, CPU-sized).
Each stage can also run alone on a run directory, so a step can be inspected, edited and rerun.
Settings: `--config FILE` (YAML, see configs/) and `key=value` overrides such as `sample.n=4`;
`srlm config --list` lists every key with its default and meaning.
"""

STAGE_HELP = {
    "sft": "M0 -> M1: supervised fine-tuning on the seed IFT + EFT data",
    "prompts": "iteration t: new prompts by few-shot self-instruct -> iter_<t>/prompts.jsonl",
    "sample": "iteration t: N candidates per prompt from M_t -> iter_<t>/candidates.jsonl",
    "judge": "iteration t: K rubric judgments per candidate by M_t -> iter_<t>/judgments.jsonl",
    "pairs": "iteration t: highest vs lowest mean score per prompt -> iter_<t>/pairs.jsonl",
    "dpo": "iteration t: DPO on iter_<t>/pairs.jsonl -> models/M<t+1>",
}


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config file, or the name of a packaged one: default "
                   "(the embedded CPU run, used when omitted), tiny, gpu-qwen2.5-7b")
    p.add_argument("--output-dir", metavar="DIR", help="run directory (overrides output_dir)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. sample.n=4 dpo.beta=0.1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srlm", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="the whole loop: SFT then T self-rewarding iterations (resumable)",
                       description="Run SFT and T iterations. Rerun the same command after a crash to resume.")
    _add_config_args(p)
    p.add_argument("--no-eval", action="store_true", help="skip `srlm eval` after each iteration")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume a run directory even though its saved config differs")

    for name, help_text in STAGE_HELP.items():
        p = sub.add_parser(name, help=help_text, description=help_text + ". Uses DIR/config.yaml when DIR "
                           "exists; --redo deletes this stage's output first.")
        p.add_argument("run_dir", metavar="DIR", help="run directory")
        if name != "sft":
            p.add_argument("--iteration", "-t", type=int, default=1, help="iteration t (default 1)")
        p.add_argument("--redo", action="store_true", help="delete this stage's output and marker, then run it")
        p.add_argument("--config", metavar="FILE", help="config for a new run directory")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    p = sub.add_parser("eval", help="judge-human agreement, win rates and lengths for a run's models",
                       description="Evaluate models of a run directory: each model's agreement with human "
                       "pairwise preferences when judging (eval.human_prefs), its answers to held-out prompts "
                       "(eval.prompts) with lengths and AlpacaEval/MT-Bench exports, and head-to-head win rates "
                       "of each M_t against M_{t-1} and M1 (judge: eval.judge). Results go to DIR/metrics.json "
                       "and DIR/eval/; finished parts are reused.")
    p.add_argument("run_dir", metavar="DIR", help="run directory made by `srlm run`")
    p.add_argument("--models", help="comma-separated, e.g. M0,M1,M3 (default: all)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. eval.max_prompts=16")

    p = sub.add_parser("report", help="write DIR/report/index.html and report.md with plots",
                       description="Build a self-contained HTML page (opens offline) and a Markdown report of a "
                       "run: its config, every metric per iteration, plots of judge-human agreement, win rates, "
                       "score histograms, pairs kept vs dropped, chosen vs rejected length and DPO loss, and "
                       "example answers side by side.")
    p.add_argument("run_dir", metavar="DIR", help="run directory made by `srlm run`")

    p = sub.add_parser("config", help="print the resolved config, or --list every key with its help")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--list", action="store_true", help="list every key, default and meaning")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def _config_for_dir(run_dir: str, config: str | None, overrides: list[str]):
    saved = os.path.join(run_dir, "config.yaml")
    cfg = load_config(config or (saved if os.path.exists(saved) else None), overrides)
    cfg.output_dir = run_dir
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow options (`srlm eval DIR --models M1 eval.k=3`), which argparse
    # leaves unparsed: take every leftover key=value as an override.
    args, extra = parser.parse_known_args(argv)
    bad = [x for x in extra if x.startswith("-") or "=" not in x]
    if bad or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra
    if not args.command:
        parser.print_help()
        return 0
    from srlm.records import InputError

    try:
        return _dispatch(args)
    except (ConfigError, InputError) as e:
        print(f"srlm: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `srlm config --list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args) -> int:
    if args.command == "config":
        if args.list:
            for key, default, help_text in describe():
                print(f"{key} = {default}")
                print(textwrap.indent(textwrap.fill(help_text, 88), "    "))
            return 0
        import yaml

        from srlm.config import to_dict

        print(yaml.safe_dump(to_dict(load_config(args.config, args.overrides)), sort_keys=False))
        return 0

    from srlm import pipeline

    if args.command == "run":
        from srlm.config import packaged_config

        cfg = load_config(args.config or packaged_config("default"), args.overrides)
        if args.output_dir:
            cfg.output_dir = args.output_dir
        metrics = pipeline.run(cfg, allow_config_change=args.allow_config_change, evaluate=not args.no_eval)
        from srlm.summary import print_summary

        print_summary(cfg.output_dir, metrics)
        return 0

    if args.command in STAGE_HELP:
        cfg = _config_for_dir(args.run_dir, args.config, args.overrides)
        run_dir = pipeline.prepare(cfg, allow_config_change=True)
        if args.command == "sft":
            if args.redo:
                _remove(os.path.join(run_dir, "models", "M1"))
            values = pipeline.run_sft(cfg, run_dir)
        else:
            t = args.iteration
            if args.command != "prompts" and not os.path.exists(os.path.join(run_dir, "models", f"M{t}")):
                print(f"srlm: error: {run_dir}/models/M{t} does not exist; run the earlier stages first",
                      file=sys.stderr)
                return 2
            if args.command == "dpo":
                if args.redo:
                    _remove(os.path.join(run_dir, "models", f"M{t + 1}"))
                from srlm import dpo

                values = dpo.run(cfg, run_dir, t)
                pipeline.record(run_dir, f"iter_{t}", values)
            elif args.command == "pairs":
                from srlm import pairs

                if args.redo:
                    _remove(os.path.join(run_dir, f"iter_{t}", "pairs.jsonl"))
                values = pairs.run(cfg, run_dir, t)
                pipeline.record(run_dir, f"iter_{t}", values)
            else:
                if args.redo:
                    _remove(os.path.join(run_dir, f"iter_{t}", pipeline.STAGE_FILES[args.command]))
                values = pipeline.run_generation_stage(cfg, run_dir, t, args.command)
        print(json.dumps(values, indent=1))
        return 0

    if args.command == "eval":
        from srlm import evaluate

        cfg = _config_for_dir(args.run_dir, None, args.overrides)
        models = args.models.split(",") if args.models else None
        results = evaluate.evaluate_models(cfg, args.run_dir, models)
        print(json.dumps(results, indent=1))
        return 0

    if args.command == "report":
        from srlm import report

        path = report.build(args.run_dir)
        print(path)
        return 0
    return 1


def _remove(path: str) -> None:
    for p in (path, path + ".done"):
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
    import glob

    for p in glob.glob(path + ".partial.*"):
        os.remove(p)


if __name__ == "__main__":
    sys.exit(main())
