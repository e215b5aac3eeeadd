"""Corpora tokenised once into Parquet files of fixed-size windows, then read memory-mapped.

`prepare_data(cfg)` writes `<run_dir>/data/{train,valid,test}.parquet`, `vocab.json` and
`manifest.json` (for a storage URI run_dir, in the driver's local cache of it: maskgan_rl.storage).
Each Parquet file carries its own vocabulary and provenance in the schema metadata, so it can be
opened with nothing else and checked against the run. Only the driver reads them: workers get the
windows through Ray's object store (maskgan_rl.rl.adversarial).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from maskgan_rl.config import Config, DataConfig
from maskgan_rl.corpora import read_imdb, read_text_corpus, source_sha256
from maskgan_rl.errors import DataError
from maskgan_rl.oracle import OracleLM, oracle_vocab
from maskgan_rl.progress import Progress
from maskgan_rl.storage import check_writable, local_dir, replacing, writable_dir
from maskgan_rl.vocab import EOS, Vocab, check_vocab

SPLITS = ("train", "valid", "test")
HOLDOUT_FRACTION = 0.05  # of the train windows, when no validation corpus is given
FORMAT_VERSION = 1  # bump when the files written here change meaning, to force a rebuild
_IMDB_SHUFFLE_SEED = 0


@dataclass
class PreparedData:
    train_path: Path
    valid_path: Path
    test_path: Optional[Path]  # None when the config names no test corpus
    vocab: Vocab
    # vocab_size, <split>_windows, and <split>_tokens: tokens read from that split's own source
    # (<eos> and real review words included, padding excluded; a held-out split has none).
    counts: dict[str, int]


@dataclass
class _Split:
    windows: np.ndarray  # [N, T+1] token ids
    tokens: Optional[int]
    source: str
    sha256: Optional[str] = None


def prepare_data(cfg: Config) -> PreparedData:
    """Build the run's data files, or reuse them when the data config and source files are unchanged."""
    d = cfg.data
    check_writable(cfg.run_dir, f"run_dir={cfg.run_dir}")
    # Read on the driver only (workers get the windows through Ray's object store): with a URI
    # run_dir they are cached on the driver's disk and rebuilt from the sources elsewhere.
    data_dir = writable_dir(local_dir(cfg.run_dir) / "data", f"run_dir={cfg.run_dir}")
    key = _config_key(d)
    reused = _reuse(data_dir, key)
    if reused is not None:
        return reused

    vocab, splits = _BUILDERS[d.dataset](d)
    if "valid" not in splits:
        splits["train"], splits["valid"] = _hold_out(splits["train"])
    (data_dir / "manifest.json").unlink(missing_ok=True)  # the old files stop counting as complete
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    counts = {"vocab_size": len(vocab)}
    for name, split in splits.items():
        counts[f"{name}_windows"] = len(split.windows)
        if split.tokens is not None:
            counts[f"{name}_tokens"] = split.tokens
        provenance = {
            "dataset": d.dataset, "split": name, "source": split.source, "source_sha256": split.sha256,
            "counts": {"tokens": split.tokens, "windows": len(split.windows), "vocab_size": len(vocab)},
            "created": created,
        }
        with replacing(data_dir / f"{name}.parquet") as tmp:
            write_windows(tmp, split.windows, vocab, provenance)
    if "test" not in splits:  # a file from an earlier config must not pass for this one's test set
        (data_dir / "test.parquet").unlink(missing_ok=True)
    with replacing(data_dir / "vocab.json") as tmp:
        vocab.save(tmp)
    # The manifest goes last: its presence means every file above is complete.
    manifest = {"key": key, "counts": counts, "splits": sorted(splits)}
    with replacing(data_dir / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return _prepared(data_dir, vocab, manifest)


class WindowDataset:
    """A window file opened memory-mapped: `windows` int64 [N, T+1], `vocab`, `seq_len`, `provenance`."""

    def __init__(self, path: str | Path, expect_vocab: Optional[Vocab] = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: window file not found: run data preparation (prepare_data) first")
        try:
            table = pq.read_table(pa.memory_map(str(self.path)))
        except (pa.ArrowException, OSError) as err:
            raise DataError(
                f"{self.path}: not a readable Parquet file ({err}): delete it and prepare the data again"
            ) from None
        meta = table.schema.metadata or {}
        column_type = table.schema.field("window").type if "window" in table.column_names else pa.null()
        if not (
            {b"vocab", b"seq_len", b"provenance"} <= meta.keys()
            and pa.types.is_fixed_size_list(column_type)
            and pa.types.is_integer(column_type.value_type)
        ):
            raise DataError(f"{self.path}: not a window file written by prepare_data: prepare the data again")
        self.vocab = Vocab.from_json(meta[b"vocab"].decode("utf-8"), where=f"{self.path} metadata")
        self.seq_len = column_type.list_size - 1
        self.provenance = json.loads(meta[b"provenance"])
        if expect_vocab is not None:
            check_vocab(self.vocab, expect_vocab, where=str(self.path))
        # Widening the stored int32 to int64 (what embeddings index with) is the one copy made.
        values = table.column("window").combine_chunks().flatten().to_numpy()
        self.windows = values.astype(np.int64).reshape(-1, self.seq_len + 1)
        if not len(self.windows) or self.windows.min() < 0 or self.windows.max() >= len(self.vocab):
            raise DataError(f"{self.path}: no windows, or ids outside its vocabulary: prepare the data again")

    def __len__(self) -> int:
        return len(self.windows)

    def sample(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        return sample_windows(self.windows, batch, rng)


def sample_windows(windows: np.ndarray, batch: int, rng: np.random.Generator) -> np.ndarray:
    """`batch` rows of `windows` drawn uniformly with replacement, [batch, T+1]."""
    return windows[rng.integers(len(windows), size=batch)]


def write_windows(path: str | Path, windows: np.ndarray, vocab: Vocab, provenance: dict) -> None:
    """One Parquet file: column `window` fixed_size_list<int32>[T+1], vocabulary and provenance as metadata."""
    width = windows.shape[1]
    values = pa.array(np.ascontiguousarray(windows, dtype=np.int32).ravel())
    column = pa.FixedSizeListArray.from_arrays(values, width)
    metadata = {"vocab": vocab.to_json(), "seq_len": str(width - 1), "provenance": json.dumps(provenance)}
    table = pa.table({"window": column}).replace_schema_metadata(metadata)
    # Uncompressed, plain-encoded pages: small files that memory-map without a decode step.
    pq.write_table(table, str(path), compression="none", use_dictionary=False)


def _build_text(d: DataConfig) -> tuple[Vocab, dict[str, _Split]]:
    """PTB style: one token stream, `<eos>` after each sentence, cut into windows with stride T."""
    train = read_text_corpus(d.train_path, d.lowercase)
    vocab = Vocab.build(train, d.vocab_size, d.min_freq)
    splits = {}
    for name, path in _sources(d).items():
        sentences = train if name == "train" else read_text_corpus(path, d.lowercase)
        stream = np.array(vocab.encode([token for s in sentences for token in (*s, EOS)]), dtype=np.int64)
        if len(stream) < d.seq_len + 1:
            raise DataError(
                f"{path}: {len(stream)} tokens, fewer than one window of data.seq_len + 1 = {d.seq_len + 1}: "
                "use a longer corpus or a smaller data.seq_len"
            )
        # Consecutive windows share one token: the last target of one is the first input of the next.
        starts = np.arange((len(stream) - 1) // d.seq_len) * d.seq_len
        windows = stream[starts[:, None] + np.arange(d.seq_len + 1)]
        splits[name] = _Split(windows, len(stream), str(Path(path).resolve()), source_sha256(path))
    return vocab, splits


def _build_imdb(d: DataConfig) -> tuple[Vocab, dict[str, _Split]]:
    """One window per review: its first T+1 tokens, shorter reviews padded with `<eos>`."""
    width = d.seq_len + 1
    sources = _sources(d)
    reviews = {name: _shuffled(read_imdb(path, width), d.imdb_max_reviews) for name, path in sources.items()}
    vocab = Vocab.build(reviews["train"], d.vocab_size, d.min_freq)
    splits = {}
    for name, path in sources.items():
        padded = [vocab.encode(r) + [vocab.eos_id] * (width - len(r)) for r in reviews[name]]
        tokens = sum(len(r) for r in reviews[name])
        windows = np.array(padded, dtype=np.int64)
        splits[name] = _Split(windows, tokens, str(Path(path).resolve()), source_sha256(path))
    return vocab, splits


def _build_synthetic(d: DataConfig) -> tuple[Vocab, dict[str, _Split]]:
    """Samples of the oracle LM, each a boundary token followed by T sampled tokens."""
    oracle = OracleLM(d.oracle_vocab, d.oracle_hidden, d.oracle_seed)
    # seed + 1: the weights already used `seed`'s stream; sharing it would correlate data and weights.
    rng = torch.Generator(device="cpu").manual_seed(d.oracle_seed + 1)
    source = f"oracle LSTM LM (vocab {d.oracle_vocab}, hidden {d.oracle_hidden}, seed {d.oracle_seed})"
    counts = {name: getattr(d, f"synthetic_{name}") for name in SPLITS}
    progress = Progress("data", total=sum(counts.values()), unit="seq")
    sampled = 0

    def advance(rows: int) -> None:
        nonlocal sampled
        sampled += rows
        progress.update(sampled)

    splits = {
        name: _Split(oracle.sample(count, d.seq_len, rng, advance).numpy(), count * d.seq_len, source)
        for name, count in counts.items()
    }
    return oracle_vocab(d.oracle_vocab), splits


_BUILDERS: dict[str, Callable[[DataConfig], tuple[Vocab, dict[str, _Split]]]] = {
    "text": _build_text, "imdb": _build_imdb, "synthetic": _build_synthetic,
}


def _sources(d: DataConfig) -> dict[str, str]:
    return {name: getattr(d, f"{name}_path") for name in SPLITS if getattr(d, f"{name}_path")}


def _shuffled(reviews: list[list[str]], max_reviews: int) -> list[list[str]]:
    """A fixed shuffle (then the first `max_reviews`, 0 = all): the IMDB files are sorted by label,
    so a subset or the held-out tail would otherwise be all one sentiment."""
    order = np.random.default_rng(_IMDB_SHUFFLE_SEED).permutation(len(reviews))
    return [reviews[i] for i in order[: max_reviews or None]]


def _hold_out(train: _Split) -> tuple[_Split, _Split]:
    """The last 5% of the train windows become validation: a contiguous tail, so for text no
    held-out window shares a sentence with a training window except at the one boundary."""
    n = len(train.windows)
    held = max(1, round(HOLDOUT_FRACTION * n))
    if n - held < 1:
        raise DataError(
            f"{train.source}: only {n} window(s), too few to hold out validation: "
            "give data.valid_path or a longer corpus"
        )
    kept = dataclasses.replace(train, windows=train.windows[:-held])
    valid = _Split(train.windows[-held:], None, f"last {held} windows of train ({train.source})", train.sha256)
    return kept, valid


def _config_key(d: DataConfig) -> str:
    """Hash of everything the files depend on: data settings and source contents (not their paths)."""
    settings = {k: v for k, v in dataclasses.asdict(d).items() if not k.endswith("_path")}
    sources = {name: source_sha256(path) for name, path in _sources(d).items()}
    blob = json.dumps({"version": FORMAT_VERSION, "data": settings, "sources": sources}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _reuse(data_dir: Path, key: str) -> Optional[PreparedData]:
    try:
        manifest = json.loads((data_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    files = [data_dir / f"{name}.parquet" for name in manifest.get("splits", [])] + [data_dir / "vocab.json"]
    if manifest.get("key") != key or not all(f.is_file() for f in files):
        return None
    return _prepared(data_dir, Vocab.load(data_dir / "vocab.json"), manifest)


def _prepared(data_dir: Path, vocab: Vocab, manifest: dict) -> PreparedData:
    test = data_dir / "test.parquet"
    return PreparedData(
        train_path=data_dir / "train.parquet", valid_path=data_dir / "valid.parquet",
        test_path=test if "test" in manifest["splits"] else None, vocab=vocab, counts=manifest["counts"],
    )
