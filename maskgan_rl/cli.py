"""`maskgan prepare|pretrain|train|tune|infill|evaluate|serve`: a thin layer over the library functions.

Every training command takes `--preset NAME` (or a YAML path) and dotted overrides, before or after
the options (`maskgan train --preset ptb gan.algo=ppo model.hidden=256`); `--print-config` shows the
config they resolve to, as YAML that `--preset` reads back, without running anything.

Output: a command's results (in-fills, `--print-config`'s YAML, `prepare`'s counts, evaluation tables,
what a training made) go to stdout, for a pipe; progress and diagnostics go to stderr through the
`maskgan_rl` logger. Exit status (maskgan_rl/errors.py has the rule): 0 done, 2 a usage error (bad
arguments, config, input: a `MaskGANError`, printed as one line), 1 a runtime failure (`RunFailure`
as one line; anything else with its traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from maskgan_rl import __version__
from maskgan_rl.config import load_config, to_yaml
from maskgan_rl.errors import MaskGANError

log = logging.getLogger("maskgan_rl")


def main(argv: Optional[Sequence[str]] = None) -> int:
    log_to_stderr()
    parser = _parser()
    argv = _resume_auto(list(sys.argv[1:] if argv is None else argv))
    # Overrides may come before, between or after options (`train gan.algo=ppo --preset ptb`), as
    # in Hydra; argparse alone stops collecting a positional list at the first option.
    args, extra = parser.parse_known_args(argv)
    listed = next((name for name in ("overrides", "checkpoints", "text") if hasattr(args, name)), None)
    # Overrides must read key=value (a bare word is a typo); texts and checkpoint paths need not.
    stray = [arg for arg in extra if listed is None or arg.startswith("-") or (listed == "overrides" and "=" not in arg)]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        setattr(args, listed, [*getattr(args, listed), *extra])
    try:
        if getattr(args, "print_config", False):
            return _print_config(args)
        return args.run(args) or 0
    except MaskGANError as err:
        log.error(f"maskgan {args.command}: error: {err}")
        return err.exit_status
    except KeyboardInterrupt:
        log.error(f"maskgan {args.command}: interrupted; the last complete checkpoint is kept (use --resume)")
        return 130


def _resume_auto(argv: list[str]) -> list[str]:
    """`--resume auto` -> `--resume`: the spelling a job script uses for "start, or continue" (what
    `--resume` does). Taken out here because an optional value would make argparse read an override
    after the flag (`--resume gan.iterations=40`) as the flag's value."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "--resume" and argv[i + 1] == "auto":
            return argv[:i + 1] + argv[i + 2:]
    return argv


class _StderrHandler(logging.StreamHandler):
    """Writes each line to whatever sys.stderr is at that moment (pytest swaps it between tests)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def log_to_stderr() -> None:
    """The `maskgan_rl` logger (the parent of every module's) prints INFO and up, one plain line each, on stderr."""
    log.setLevel(logging.INFO)
    if not any(isinstance(handler, _StderrHandler) for handler in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)


def _config(args: argparse.Namespace):
    return load_config(args.preset, args.overrides)


def _print_config(args: argparse.Namespace) -> int:
    print(to_yaml(_config(args)), end="")
    return 0


# Each command imports its module when it runs: `--help`, `--print-config` and a bad override answer
# without loading torch, Ray or MLflow, and a command loads only what it uses.
def _prepare(args: argparse.Namespace) -> None:
    from maskgan_rl.dataset import prepare_data

    data = prepare_data(_config(args))
    for key, value in data.counts.items():
        print(f"{key}: {value:,}" if isinstance(value, int) else f"{key}: {value}")


def _pretrain(args: argparse.Namespace) -> None:
    from maskgan_rl.train import run_pretraining

    run_pretraining(_config(args))


def _train(args: argparse.Namespace) -> None:
    from maskgan_rl.train import run_training

    run_training(_config(args), resume=args.resume)


def _tune(args: argparse.Namespace) -> None:
    from maskgan_rl.tune import run_sweep

    run_sweep(
        _config(args), args.space, metric=args.metric, mode=args.mode, num_samples=args.num_samples,
        max_concurrent=args.max_concurrent, grace_period=args.grace_period,
        reduction_factor=args.reduction_factor, resume=args.resume,
    )


def _infill(args: argparse.Namespace) -> None:
    from maskgan_rl.infill import infill_command

    infill_command(args)


def _evaluate(args: argparse.Namespace) -> None:
    from maskgan_rl.evaluate import evaluate_command

    evaluate_command(args)


def _serve(args: argparse.Namespace) -> None:
    from maskgan_rl.serving import serve_command

    serve_command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskgan",
        description="Train and use MaskGAN text in-filling models (adversarial training on Ray RLlib).",
        epilog="examples:\n"
        "  maskgan train                                  # the whole pipeline on the synthetic default\n"
        "  maskgan train --preset ptb gan.algo=ppo        # a preset, with dotted overrides\n"
        '  maskgan infill runs/ptb/checkpoints/maskgan.pt "the ___ rose sharply"\n'
        "  maskgan evaluate runs/ptb/checkpoints/maskgan.pt runs/ptb/checkpoints/mle.pt\n"
        "  maskgan serve runs/ptb/checkpoints/maskgan.pt --port 8000  # JSON API and a web page\n"
        "`maskgan COMMAND --help` describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"maskgan {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def configured(name: str, run, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument("--preset", default="synthetic", help="synthetic (default) | synthetic-gan | ptb | imdb | path/to/config.yaml")
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. gan.algo=ppo")
        sub.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit (runs nothing)")
        sub.set_defaults(run=run)
        return sub

    configured("prepare", _prepare, "tokenise a corpus into Parquet windows and a vocabulary")
    configured("pretrain", _pretrain, "train the language model, then MaskMLE")
    train = configured("train", _train, "the whole pipeline: prepare, pretrain (or load), adversarial training")
    train.add_argument(
        "--resume", action="store_true",
        help="start a new run, or continue the one in run_dir from its newest readable checkpoint; "
        "`--resume auto` says the same (what a cluster job should run: every retry continues)",
    )

    tune = configured("tune", _tune, "a hyperparameter sweep on Ray Tune: trials of the whole pipeline, ASHA early stopping")
    tune.add_argument("--space", required=True, help="search space YAML: dotted keys -> {loguniform|uniform|randint: [low, high]} or {choice|grid: [...]}")
    tune.add_argument("--metric", default="eval/oracle_nll", help="what ASHA and the ranking compare, e.g. learner_masked_perplexity, eval/masked_perplexity")
    tune.add_argument("--mode", default="min", choices=("min", "max"), help="whether lower or higher --metric is better")
    tune.add_argument("--num-samples", type=int, default=1, help="trials per grid point (Tune's num_samples)")
    tune.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: as many as the cluster's resources place)")
    tune.add_argument("--grace-period", type=int, default=1, help="iterations every trial runs before ASHA may stop it")
    tune.add_argument("--reduction-factor", type=int, default=4, help="ASHA keeps about 1 in this many trials at each rung")
    tune.add_argument("--resume", action="store_true", help="continue the sweep in run_dir after its driver died (Tuner.restore)")

    infill = commands.add_parser(
        "infill",
        help="fill in the blanks (___) of a sentence with a trained generator",
        description="Each ___ is one masked token (___ ___ = two words); a text holds at most data.seq_len "
        "tokens; words outside the vocabulary are read as <unk> (with a warning).",
    )
    infill.add_argument("checkpoint", help="a MaskMLE or MaskGAN checkpoint (.pt)")
    infill.add_argument("text", nargs="*", help='texts with ___ blanks, each quoted: "the ___ rose"; else --file or stdin')
    infill.add_argument("--file", help="one text per line")
    infill.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (< 1: safer words)")
    infill.add_argument("--samples", type=int, default=1, help="filled versions per text")
    infill.add_argument("--seed", type=int, default=None, help="for reproducible samples")
    infill.set_defaults(run=_infill)

    evaluate = commands.add_parser(
        "evaluate",
        help="metrics, samples, quality-diversity curves and the verdict against MaskMLE for checkpoints",
        description="Checkpoints are grouped into models by the kind recorded in them (MaskMLE, MaskGAN-<algo>, LM), "
        "or by NAME in NAME:path.pt; several checkpoints of one model are its training seeds, paired in the order "
        "given with the baseline's. Every model is compared with the baseline at matched reverse-LM perplexity.",
    )
    evaluate.add_argument(
        "checkpoints", nargs="+", metavar="[NAME:]CHECKPOINT|key=value",
        help="checkpoints to compare (e.g. mle.pt maskgan.pt), then optional dotted config overrides",
    )
    evaluate.add_argument("--preset", default=None, help="evaluate on another data config (default: the first checkpoint's)")
    evaluate.add_argument("--out", default=None, help="output folder (default: <run_dir>/eval)")
    evaluate.add_argument("--temperatures", default=None, help="comma-separated temperatures to sweep (default 0.5 to 1.5 by 0.1)")
    evaluate.add_argument("--samples", type=int, default=1000, help="held-out windows filled (at most half the split)")
    evaluate.add_argument("--split", choices=("valid", "test"), default="valid")
    evaluate.add_argument("--bleu-order", type=int, default=4)
    evaluate.add_argument("--bleu-references", type=int, default=500, help="fixed reference count (BLEU depends on it)")
    evaluate.add_argument("--reverse-lm-steps", type=int, default=200, help="training steps of each reverse LM; 0 skips it")
    evaluate.add_argument(
        "--two-sample-steps", type=int, default=100,
        help="training steps of each held-out discriminator (two-sample test, same for every model); 0 skips it",
    )
    evaluate.add_argument("--table-rows", type=int, default=20, help="rows of the side-by-side samples table")
    evaluate.add_argument(
        "--seeds", "--seed", default="0",
        help="comma-separated evaluation seeds (masks and sampling, shared by every checkpoint), e.g. 0,1,2: the verdict's interval",
    )
    evaluate.add_argument("--baseline", default="MaskMLE", help="the model the others are compared with (default MaskMLE)")
    evaluate.add_argument(
        "--baseline-temperatures", default=None,
        help="comma-separated temperatures for the baseline's checkpoints alone, including every --temperatures value "
        "(default: --temperatures): a finer grid along the curve the others are matched to",
    )
    evaluate.set_defaults(run=_evaluate)

    serve = commands.add_parser(
        "serve",
        help="serve a generator over HTTP with Ray Serve: a JSON API (POST /infill) and a web page (/)",
        description="The checkpoint's generator as a Ray Serve deployment until Ctrl-C. Texts follow the rules "
        "of `maskgan infill`. Settings come from the checkpoint's config (default values in parentheses below); the flags "
        "set serve.* keys, dotted overrides any serve.* or resources.* key (serve.num_cpus_per_replica=2, "
        "resources.ray_address=auto).",
    )
    serve.add_argument("checkpoint", help="a MaskMLE or MaskGAN checkpoint (.pt)")
    serve.add_argument("overrides", nargs="*", metavar="key=value", help="serve.* and resources.* settings, e.g. serve.max_samples=32")
    serve.add_argument("--host", help="serve.host: the address to listen on (127.0.0.1: this machine only; 0.0.0.0: all)")
    serve.add_argument("--port", type=int, help="serve.port: the HTTP port (8000)")
    serve.add_argument("--replicas", type=int, help="serve.replicas: copies of the generator sharing the requests (1)")
    serve.add_argument("--max-batch-size", type=int, help="serve.max_batch_size: concurrent requests a replica samples together (32)")
    serve.add_argument("--batch-wait-ms", type=float, help="serve.batch_wait_ms: how long a replica waits for more requests to batch (10)")
    serve.set_defaults(run=_serve)
    return parser


if __name__ == "__main__":
    sys.exit(main())
