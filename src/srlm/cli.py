"""The `srlm` command: the whole loop (`srlm run`) or any single stage on a run directory."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from srlm.run.config import ConfigError, describe, load_config, packaged_names

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

def _add_config_args(p: argparse.ArgumentParser) -> None:
    others = ", ".join(n for n in packaged_names() if n != "default")
    p.add_argument("--config", metavar="FILE", help="YAML config file, or the name of a packaged one: default "
                   f"(the embedded CPU run, used when omitted), {others}")
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
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show the libraries' own output (weight loading, TRL's logged dicts) instead of writing it "
                   "to DIR/logs/<stage>.log")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume a run directory even though its saved config differs")
    p.add_argument("--from-run", metavar="SRC",
                   help="start from another run's M1: take SRC's SFT model (and EFT build), with M0's and M1's "
                   "evaluation when the evaluation settings are equal, wherever SRC made them with this run's "
                   "settings; the rest is built here. For comparing methods from one SFT model")

    from srlm.stages import STAGES

    for stage in STAGES:
        help_text = stage.help
        p = sub.add_parser(stage.name.replace("_", "-"), help=help_text,
                           description=help_text + ". On an existing run directory it uses DIR/config.yaml (never "
                           "rewritten) plus the overrides given here, which are recorded in the stage's marker; "
                           "an output whose inputs or settings changed is rebuilt, a fresh one is kept. --redo "
                           "rebuilds it anyway and first removes everything downstream of it, listing what goes.")
        p.add_argument("run_dir", metavar="DIR", help="run directory")
        if stage.per_iteration:
            p.add_argument("--iteration", "-t", type=int, default=1, help="iteration t (default 1)")
        p.add_argument("--redo", action="store_true",
                       help="rebuild this output even if fresh, after removing everything downstream of it")
        p.add_argument("--config", metavar="FILE", help="config for a new run directory (default: the packaged default)")
        p.add_argument("--verbose", "-v", action="store_true", help="show the libraries' own output")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    p = sub.add_parser("eval", help="judge-human agreement, win rates and lengths for a run's models",
                       description="Evaluate models of a run directory: each model's agreement with human "
                       "pairwise preferences when judging (eval.human_prefs), its answers to held-out prompts "
                       "(eval.prompts) with lengths and AlpacaEval/MT-Bench exports, and head-to-head win rates "
                       "of each M_t against M_{t-1} and M1 (judge: eval.judge). Results go to DIR/metrics.json "
                       "and DIR/eval/; finished parts are reused.")
    p.add_argument("run_dir", metavar="DIR", help="run directory made by `srlm run`")
    p.add_argument("--models", help="comma-separated, e.g. M0,M1,M3 (default: all)")
    p.add_argument("--verbose", "-v", action="store_true", help="show the libraries' own output (else DIR/logs/eval.log)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. eval.max_prompts=16")

    p = sub.add_parser("report", help="write DIR/report/index.html and report.md with plots",
                       description="Build a self-contained HTML page (opens offline) and a Markdown report of a "
                       "run: its config, every metric per iteration, plots of judge-human agreement, win rates, "
                       "score histograms, pairs kept vs dropped, chosen vs rejected length and DPO loss, and "
                       "example answers side by side.")
    p.add_argument("run_dir", metavar="DIR", help="run directory made by `srlm run`")

    p = sub.add_parser("compare", help="one report over several run directories (methods side by side)",
                       description="Write OUT/index.html and OUT/report.md comparing runs that share a seed and an "
                       "evaluation set: judge-human agreement beside the length heuristic, win rates, answer "
                       "length and pairs per iteration, wall time; with --h2h-judge, win rates of each run's "
                       "final model against the others' and their common M1, by one judge.")
    p.add_argument("run_dirs", nargs="+", metavar="DIR")
    p.add_argument("--out", required=True, metavar="OUT", help="output directory")
    p.add_argument("--h2h-judge", metavar="SPEC",
                   help="judge every run's final model and the first run's M1 against each other, pointwise and "
                   "pairwise, from the answers `srlm eval` left in DIR/eval/: M<k> (the first run's model), a local "
                   "model path, or openai:MODEL@BASE_URL; verdicts cached in OUT/cross/")
    p.add_argument("--no-h2h-pairwise", action="store_true",
                   help="with --h2h-judge, the pointwise judge only (the pairwise one costs two generations per "
                   "prompt and pair of models, and a small judge's pairwise verdicts follow position)")

    p = sub.add_parser("config", help="print the resolved config, or --list every key with its help")
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--list", action="store_true", help="list every key, default and meaning")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def _config_for_dir(run_dir: str, config: str | None, overrides: list[str]):
    """(config, overrides to record, whether the directory is new): an existing run directory's
    saved config plus overrides, or a new one's config (packaged default unless --config)."""
    from srlm.run.config import ConfigError, with_overrides
    from srlm.run.rundir import RunDir

    saved = RunDir(run_dir).config
    if os.path.exists(saved):
        if config:
            raise ConfigError(f"{run_dir} already has a config ({saved}); --config is for new run directories, "
                              "use key=value overrides to change a setting for one stage")
        cfg = with_overrides(load_config(saved), overrides)
        return cfg.model_copy(update={"output_dir": run_dir}), list(overrides), False
    cfg = load_config(config, overrides)
    return cfg.model_copy(update={"output_dir": run_dir}), [], True


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
    from srlm.run.records import InputError

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
            from srlm.run.config import get

            packaged = load_config(None)
            for key, paper, help_text in describe():
                value = repr(get(packaged, key))
                print(f"{key} = {value}" + ("" if value == paper else f"   (paper: {paper})"))
                print(textwrap.indent(textwrap.fill(help_text, 88), "    "))
            return 0
        import yaml

        from srlm.run.config import to_dict

        print(yaml.safe_dump(to_dict(load_config(args.config, args.overrides)), sort_keys=False))
        return 0

    from srlm import pipeline
    from srlm.stages import BY_NAME, runs

    if args.command == "run":
        cfg = load_config(args.config, args.overrides)
        if args.output_dir:
            cfg.output_dir = args.output_dir
        metrics = pipeline.run(cfg, allow_config_change=args.allow_config_change, evaluate=not args.no_eval,
                               verbose=args.verbose, from_run=args.from_run)
        from srlm.evaluation.summary import print_summary

        print_summary(cfg.output_dir, metrics)
        return 0

    stage_name = args.command.replace("-", "_")
    if stage_name in BY_NAME:
        stage = BY_NAME[stage_name]
        cfg, overrides, new = _config_for_dir(args.run_dir, args.config, args.overrides)
        if not runs(stage, cfg) or (stage.per_iteration and not stage.in_iteration(cfg, args.iteration)):
            # e.g. `srlm judge-prev` on a self-rewarding run: its output would feed nothing.
            where = f" in iteration {args.iteration}" if stage.per_iteration and runs(stage, cfg) else ""
            print(f"srlm {args.command}: this run (method {cfg.method}) has no {stage.name} stage{where}; "
                  f"`srlm {args.command} --help` says when it runs", file=sys.stderr)
            return 2
        from srlm.checks import check_inputs

        check_inputs(cfg)
        rd = pipeline.prepare(cfg, allow_config_change=True, save=new)
        t = args.iteration if stage.per_iteration else 0
        from srlm.run import progress

        progress.start_run([stage.name], args.verbose)
        if args.redo:
            from srlm.run.parallel import barrier, is_main

            if is_main():
                pipeline.invalidate(cfg, rd, stage, t)
            barrier()
        values, _ = pipeline.run_stage(stage, cfg, rd, t, overrides=overrides, force=args.redo)
        print(json.dumps(values, indent=1))
        return 0

    if args.command == "eval":
        from srlm.evaluation import evaluate

        cfg, _, _ = _config_for_dir(args.run_dir, None, args.overrides)
        models = args.models.split(",") if args.models else None
        from srlm.run import progress
        from srlm.run.rundir import RunDir

        progress.start_run(["eval"], args.verbose)
        with progress.stage(RunDir(args.run_dir).log("eval"), "eval"):
            results = evaluate.evaluate_models(cfg, args.run_dir, models)
        print(json.dumps(results, indent=1))
        return 0

    if args.command == "report":
        from srlm.evaluation import report

        print(report.build(args.run_dir))
        return 0

    if args.command == "compare":
        from srlm.evaluation import report

        if args.no_h2h_pairwise and not args.h2h_judge:
            raise ConfigError("--no-h2h-pairwise needs --h2h-judge")
        print(report.build_compare(args.run_dirs, args.out, h2h_judge=args.h2h_judge,
                                   h2h_pairwise=not args.no_h2h_pairwise))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
