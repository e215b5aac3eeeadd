#!/usr/bin/env python3
"""Run `maskgan train` on a Ray cluster as a Ray job, and follow it.

    python launch/submit.py [--address URL] [--preset NAME] [--resume] [--no-wait] [key=value | @FILE ...]
    python launch/submit.py logs|status|stop|wait JOB_ID [--address URL]

Submitting uploads this project (launch/runtime_env.yaml says what is left out) and runs
`python -m maskgan_rl.cli train ...` on the head node, where `ray.init()` joins the cluster.
Without --no-wait it streams the job's output and exits 0 only if the job succeeded; `wait`
does the same for a job submitted with --no-wait, without the output.

Ray 2.60 clusters use token authentication: the token comes from $RAY_AUTH_TOKEN, else from
--token-file (default $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, the file `ray start` and
`ray get-auth-token` use). It is handed to the `ray` command through its environment, never on a
command line (where `ps` would show it) and never inside the job's runtime_env (which the dashboard
displays).

Only the standard library and the `ray` command (ray[default]) are needed on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNTIME_ENV = Path(__file__).resolve().parent / "runtime_env.yaml"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # the dashboard's job API, on loopback unless you expose it
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
SUBCOMMANDS = ("submit", "logs", "status", "stop", "wait")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS + ("-h", "--help"):
        argv.insert(0, "submit")  # submitting is the default: `submit.py --preset ptb gan.algo=ppo`
    args = _parser().parse_args(argv)
    token = read_token(args.token_file)
    if args.command == "submit":
        return submit(args, token)
    if args.command == "wait":
        return wait(args.address, args.job_id, token, args.timeout, args.poll)
    if args.command == "status":
        info = job_info(args.address, args.job_id, token)
        print(info.get("status", "UNKNOWN"))  # one word on stdout, for scripts; details on stderr
        if info.get("message"):
            print(info["message"], file=sys.stderr)
        return 0
    extra = ["--follow"] if args.command == "logs" and args.follow else []
    return _ray(["job", args.command, args.job_id, "--address", args.address, *extra], token)


def read_token(token_file: Optional[str]) -> Optional[str]:
    """The cluster's auth token: $RAY_AUTH_TOKEN, else the token file; None if neither exists."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(token_file or os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    if path.is_file():
        return path.read_text().strip() or None
    return None


def entrypoint(preset: Optional[str], resume: bool, overrides: Sequence[str]) -> list[str]:
    """The command the head runs (`ray job submit` quotes each word for the shell). `python -m`, not
    the `maskgan` script: the job's working directory is the uploaded project, so the package need
    not be installed on the cluster."""
    command = ["python", "-m", "maskgan_rl.cli", "train"]
    if preset:
        command += ["--preset", preset]
    if resume:
        command += ["--resume", "auto"]
    return command + list(overrides)


def submit(args: argparse.Namespace, token: Optional[str]) -> int:
    job_id = args.submission_id or f"maskgan-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    command = [
        "job", "submit",
        "--address", args.address,
        "--submission-id", job_id,
        "--runtime-env", str(args.runtime_env),
        # Explicit, so that the upload is this project whatever directory submit.py runs from.
        "--working-dir", str(PROJECT_ROOT),
    ]
    if args.entrypoint_num_cpus is not None:
        command += ["--entrypoint-num-cpus", str(args.entrypoint_num_cpus)]
    if args.no_wait:
        command.append("--no-wait")
    command += ["--", *entrypoint(args.preset, args.resume, args.overrides)]
    print(f"submitting job {job_id} to {args.address}", file=sys.stderr)
    # With --no-wait the job id is all that goes to stdout: the `ray` command's chatter goes to stderr.
    code = _ray(command, token, stdout=sys.stderr if args.no_wait else None)
    if args.no_wait and code == 0:
        print(job_id)  # alone on stdout, for scripts: JOB=$(python launch/submit.py --no-wait ...)
        print(f"follow it with: python {_self()} logs {job_id} --follow   |   python {_self()} wait {job_id}",
              file=sys.stderr)
    return code


def wait(address: str, job_id: str, token: Optional[str], timeout_s: Optional[float], poll_s: float) -> int:
    """Poll the job until it ends: 0 if it SUCCEEDED, 1 if it FAILED or was STOPPED (or timed out)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last = None
    while True:
        info = job_info(address, job_id, token)
        status = info.get("status", "UNKNOWN")
        if status != last:
            print(f"{job_id}: {status}", file=sys.stderr)
            last = status
        if status in TERMINAL:
            if status != "SUCCEEDED" and info.get("message"):
                print(f"{job_id}: {info['message']}", file=sys.stderr)
            return 0 if status == "SUCCEEDED" else 1
        if deadline is not None and time.monotonic() > deadline:
            print(f"{job_id}: still {status} after {timeout_s:g} s", file=sys.stderr)
            return 1
        time.sleep(poll_s)


def job_info(address: str, job_id: str, token: Optional[str]) -> dict:
    """GET /api/jobs/<id>, the Jobs REST API: its JSON is stable, unlike the CLI's wording."""
    request = urllib.request.Request(f"{address.rstrip('/')}/api/jobs/{job_id}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        hint = {
            401: "the cluster wants a token: set RAY_AUTH_TOKEN or --token-file",
            403: "the token was refused: use the cluster's (on the head: ray get-auth-token)",
            404: f"no job {job_id!r} on this cluster",
        }.get(err.code, err.reason)
        raise SystemExit(f"submit.py: {address}: HTTP {err.code}: {hint}") from None
    except urllib.error.URLError as err:
        raise SystemExit(
            f"submit.py: cannot reach {address} ({err.reason}): is the cluster up, and the dashboard port "
            "forwarded (ray dashboard CLUSTER.yaml, or ssh -L 8265:127.0.0.1:8265 HEAD)?"
        ) from None


def _ray(arguments: list[str], token: Optional[str], stdout=None) -> int:
    env = dict(os.environ)
    if token:
        env["RAY_AUTH_MODE"] = "token"  # the CLI only sends the token when token mode is on
        env["RAY_AUTH_TOKEN"] = token
    return subprocess.call([_ray_executable(), *arguments], env=env, stdout=stdout)


def _ray_executable() -> str:
    # The `ray` beside this Python (a venv that was not activated) before the one on PATH.
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.is_file() else shutil.which("ray")
    if not found:
        raise SystemExit("submit.py: the `ray` command is not installed here: pip install -c launch/constraints.txt 'ray[default]'")
    return found


def _self() -> str:
    return os.path.relpath(__file__)


def _parser() -> argparse.ArgumentParser:
    # `@FILE` reads arguments from FILE, one a line: launch/placement-*.args hold a cluster's overrides.
    parser = argparse.ArgumentParser(prog="submit.py", description=__doc__.split("\n\n")[0], fromfile_prefix_chars="@")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS", DEFAULT_ADDRESS),
                         help=f"the cluster's job API (default $RAY_API_SERVER_ADDRESS or {DEFAULT_ADDRESS})")
        sub.add_argument("--token-file", default=None,
                         help="auth token file when $RAY_AUTH_TOKEN is unset (default ~/.ray/auth_token)")

    sub = commands.add_parser("submit", help="submit `maskgan train` (the default command)")
    common(sub)
    sub.add_argument("--preset", default=None, help="synthetic | ptb | imdb | a YAML path inside the project")
    sub.add_argument("--resume", action="store_true",
                     help="maskgan train --resume auto: start the run, or continue it from its newest checkpoint in run_dir")
    sub.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    sub.add_argument("--submission-id", default=None, help="job id (default maskgan-<date>-<time>-<random>)")
    sub.add_argument("--runtime-env", default=RUNTIME_ENV, help="runtime_env YAML (default launch/runtime_env.yaml)")
    sub.add_argument("--entrypoint-num-cpus", type=float, default=None,
                     help="CPUs reserved for the driver (default 0: it mostly waits on actors)")
    sub.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides passed to `maskgan train`")

    for name, text in (
        ("logs", "print a job's output"),
        ("status", "print a job's status: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED"),
        ("stop", "stop a job"),
    ):
        sub = commands.add_parser(name, help=text)
        common(sub)
        sub.add_argument("job_id")
        if name == "logs":
            sub.add_argument("--follow", action="store_true", help="stream until the job ends")

    sub = commands.add_parser("wait", help="poll until the job ends; exit 0 only if it SUCCEEDED")
    common(sub)
    sub.add_argument("job_id")
    sub.add_argument("--timeout", type=float, default=None, help="give up (exit 1) after this many seconds")
    sub.add_argument("--poll", type=float, default=5.0, help="seconds between status checks")
    return parser


if __name__ == "__main__":
    sys.exit(main())
