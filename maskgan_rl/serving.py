"""`maskgan serve CKPT`: the generator as a Ray Serve deployment, with a JSON API and a web page.

Routes (a FastAPI app in every replica, behind Serve's HTTP proxy at serve.host:serve.port):
- `POST /infill` with `{"texts": ["the ___ rose"], "temperature": 1.0, "samples": 1, "seed": null}`
  (only "texts" is required) answers
  `{"fills": [[{"text": "the stock rose", "words": ["the", "stock", "rose"], "filled": [1]}, ...], ...],
  "unknown_words": []}`: per text, `samples` versions; `words` is `text` split on its single spaces and
  `filled` the positions in `words` that were blanks; `unknown_words` were read as `<unk>`. Texts follow
  `maskgan infill`'s rules and get its messages. A bad request answers `{"detail": "<one line>"}` with
  status 400 (not JSON) or 422 (anything else).
- `GET /healthz` answers `{"status": "ok", "checkpoint": ..., "vocab_size": ..., "seq_len": ..., ...}`.
- `GET /` is the in-filling page (`serving_page.html`: HTML, CSS and JS in one file, no external assets).

Each replica samples concurrent requests in batches (`@serve.batch`: up to serve.max_batch_size
requests, waiting at most serve.batch_wait_ms for them). `Infiller.fill_requests` shares the
generator's passes only between requests without a seed at the same temperature and samples a seeded
request alone from its seed: a seeded answer is what `maskgan infill --seed` prints, whatever it was
batched with.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' parameter types at run time.
import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import threading
import time
from importlib import resources
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from ray import serve
from ray.serve import Application

from maskgan_rl.config import Config, ServeConfig, config_from_dict
from maskgan_rl.errors import ConfigError, MaskGANError
from maskgan_rl.infill import FillRequest, Infiller, example_text
from maskgan_rl.loading import load_generator, resolve_device
from maskgan_rl.resources import check_cluster_can_host, serving_demands

log = logging.getLogger(__name__)

APP_NAME = "maskgan"
REQUEST_FIELDS = ("texts", "temperature", "samples", "seed")
EXAMPLE_REQUEST = '{"texts": ["the ___ rose"], "temperature": 1.0, "samples": 1, "seed": null}'
# `maskgan serve` flags: shorthands for these config keys.
FLAG_KEYS = {
    "host": "serve.host",
    "port": "serve.port",
    "replicas": "serve.replicas",
    "max_batch_size": "serve.max_batch_size",
    "batch_wait_ms": "serve.batch_wait_ms",
}

PAGE = resources.files("maskgan_rl").joinpath("serving_page.html").read_text(encoding="utf-8")
api = FastAPI(title="maskgan-rl in-filling", docs_url=None, redoc_url=None)


def read_request(payload: Any, infiller: Infiller, limits: ServeConfig) -> FillRequest:
    """A `POST /infill` body (parsed JSON) as a checked request; a MaskGANError names the first problem."""
    if not isinstance(payload, dict):
        raise MaskGANError(f"the request must be a JSON object such as {EXAMPLE_REQUEST}")
    unknown = sorted(set(payload) - set(REQUEST_FIELDS))
    if unknown:
        raise MaskGANError(f"unknown field {unknown[0]!r}: the fields are {', '.join(REQUEST_FIELDS)}")
    texts = payload.get("texts")
    if not (isinstance(texts, list) and texts and all(isinstance(text, str) for text in texts)):
        raise MaskGANError(f'"texts" must be a non-empty list of strings with ___ blanks, e.g. {EXAMPLE_REQUEST}')
    if len(texts) > limits.max_texts:
        raise MaskGANError(f"{len(texts)} texts in one request, more than serve.max_texts={limits.max_texts}: send them in several requests")
    temperature = payload.get("temperature", 1.0)
    if not _is_number(temperature):
        raise MaskGANError(f'"temperature" must be a number > 0 (1 samples the model as trained), not {json.dumps(temperature)}')
    samples = payload.get("samples", 1)
    if not _is_integer(samples):
        raise MaskGANError(f'"samples" must be an integer >= 1, not {json.dumps(samples)}')
    if samples > limits.max_samples:
        raise MaskGANError(f"samples={samples} is more than serve.max_samples={limits.max_samples}: ask for fewer samples per request")
    seed = payload.get("seed")
    if seed is not None and not _is_integer(seed):
        raise MaskGANError(f'"seed" must be null (fresh randomness) or an integer, not {json.dumps(seed)}')
    return infiller.request(texts, float(temperature), samples, seed)


def fills_json(request: FillRequest, filled: list[list[str]]) -> dict[str, Any]:
    """The `POST /infill` answer for `request`, given its filled texts (per text, per sample)."""
    fills = [
        [{"text": text, "words": text.split(" "), "filled": request.blanks(i)} for text in versions]
        for i, versions in enumerate(filled)
    ]
    return {"fills": fills, "unknown_words": request.unknown}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # JSON true is not 1


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@serve.deployment
@serve.ingress(api)
class InfillServer:
    """One replica: the generator, filling batches of concurrent requests."""

    def __init__(self, infiller: Infiller, checkpoint: str, cfg: Config):
        # Replicas answer at once: each takes the CPUs it reserved, unless resources.torch_threads says otherwise.
        torch.set_num_threads(cfg.resources.torch_threads or max(1, int(cfg.serve.num_cpus_per_replica)))
        if cfg.serve.num_gpus_per_replica > 0:  # the GPU Ray gave this replica (unless device=cpu)
            infiller.generator.to(resolve_device(cfg))
        self.infiller, self.checkpoint, self.limits = infiller, checkpoint, cfg.serve
        self.fill_batch.set_max_batch_size(cfg.serve.max_batch_size)
        self.fill_batch.set_batch_wait_timeout_s(cfg.serve.batch_wait_ms / 1000)

    @api.get("/", response_class=HTMLResponse)
    def page(self) -> str:
        return PAGE

    @api.get("/healthz")
    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "checkpoint": self.checkpoint,
            "vocab_size": len(self.infiller.vocab),
            "seq_len": self.infiller.seq_len,
            "max_texts": self.limits.max_texts,
            "max_samples": self.limits.max_samples,
            "example": example_text(self.infiller.vocab.tokens),
        }

    @api.post("/infill")
    async def infill(self, request: Request) -> dict[str, Any]:
        try:
            payload = json.loads(await request.body())
        except ValueError as err:  # malformed JSON, or bytes that are not UTF-8
            raise HTTPException(400, f"the request body is not valid JSON ({err}): send an object such as {EXAMPLE_REQUEST}") from None
        try:
            fill_request = read_request(payload, self.infiller, self.limits)
        except MaskGANError as err:
            raise HTTPException(422, str(err)) from None
        return fills_json(fill_request, await self.fill_batch(fill_request))

    @serve.batch  # sizes set per replica in __init__, from the config
    async def fill_batch(self, requests: list[FillRequest]) -> list[list[list[str]]]:
        # In a thread: the replica goes on accepting requests (the next batch) while the model runs.
        return await asyncio.to_thread(self.infiller.fill_requests, requests)


def application(infiller: Infiller, checkpoint: str, cfg: Config) -> Application:
    """The deployment with the config's replicas, their resources and batching."""
    s = cfg.serve
    return InfillServer.options(
        num_replicas=s.replicas,
        # Room for a full batch being sampled and the next one filling up.
        max_ongoing_requests=2 * s.max_batch_size,
        ray_actor_options={"num_cpus": s.num_cpus_per_replica, "num_gpus": s.num_gpus_per_replica, "resources": dict(s.replica_resources)},
    ).bind(infiller, checkpoint, cfg)


def start_server(infiller: Infiller, checkpoint: str, cfg: Config) -> str:
    """Deploy the generator on Ray Serve, starting Ray unless resources.ray_address (or $RAY_ADDRESS)
    names a cluster, and return the page's URL once every replica is up. From Ray's start on, SIGTERM
    raises KeyboardInterrupt in the main thread, as Ctrl-C does."""
    from maskgan_rl.train import init_ray  # the training stack: only the driver needs it

    s = cfg.serve
    if not _joins_cluster(cfg):
        _check_port_free(s.host, s.port)  # else Serve's proxy fails to start with a long traceback
    init_ray(cfg)
    if threading.current_thread() is threading.main_thread():
        # Ray's core worker answers SIGTERM by aborting, and the app may answer requests before serve.run
        # returns: `kill` must stop it cleanly from here on.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    check_cluster_can_host(serving_demands(s))  # else serve.run waits forever for the replicas
    serve.start(http_options={"host": s.host, "port": s.port})
    serve.run(application(infiller, checkpoint, cfg), name=APP_NAME, route_prefix="/")
    return f"http://{s.host}:{s.port}/"


def stop_server(cfg: Config) -> None:
    """Remove the deployment: on a local Ray, Serve and Ray themselves; on a cluster only this app."""
    import ray

    if not ray.is_initialized():  # start-up stopped before Ray
        return
    if _joins_cluster(cfg):
        serve.delete(APP_NAME)
    else:
        serve.shutdown()
    ray.shutdown()


def serve_command(args: argparse.Namespace) -> None:
    """`maskgan serve CHECKPOINT [--host --port --replicas --max-batch-size --batch-wait-ms] [key=value...]`"""
    flags = [f"{key}={getattr(args, flag)}" for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None]
    overrides = [*args.overrides, *flags]
    other = next((item for item in overrides if not item.startswith(("serve.", "resources."))), None)
    if other is not None:
        raise ConfigError(f"override {other!r}: maskgan serve takes serve.* and resources.* settings; the model's own come from its checkpoint")
    # The checkpoint is read here, before Ray starts: a missing or corrupt one is a one-line error.
    generator, vocab, checkpoint = load_generator(args.checkpoint)
    cfg = config_from_dict(checkpoint["config"], overrides)
    try:
        url = start_server(Infiller(generator, vocab, cfg.data), str(args.checkpoint), cfg)
        log.info(f"[serve] {args.checkpoint} at {url} (POST {url}infill, GET {url}healthz); Ctrl-C stops")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("[serve] stopping")
    finally:
        stop_server(cfg)


def _joins_cluster(cfg: Config) -> bool:
    return bool(cfg.resources.ray_address or os.environ.get("RAY_ADDRESS"))


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server itself binds
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(f"serve.port={port}: cannot listen on {host}:{port} ({err.strerror}): stop what uses it or pass another --port") from None
