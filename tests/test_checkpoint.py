import os
import pickle

import pytest
import torch

from maskgan_rl.checkpoint import latest_good_checkpoint, load_checkpoint, save_checkpoint
from maskgan_rl.errors import CheckpointError


def test_round_trip_of_tensors_and_plain_data(tmp_path):
    payload = {"config": {"seed": 1}, "vocab": ["<eos>", "<unk>", "a"], "models": {"g": {"w": torch.arange(3.0)}}}
    path = save_checkpoint(tmp_path / "c.pt", payload)
    loaded = load_checkpoint(path)
    assert loaded["vocab"] == payload["vocab"] and loaded["config"] == {"seed": 1}
    assert torch.equal(loaded["models"]["g"]["w"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"], "no temporary file may be left behind"


def test_checkpoints_get_the_usual_file_mode_not_the_temporary_files_owner_only_one(tmp_path):
    previous = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "c.pt", {"x": 1})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644  # as open() would make it (mkstemp makes 0o600)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1})

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"step": 2, "bad": Unsaveable()})
    assert load_checkpoint(path)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "obj": pickle.loads(pickle.dumps(object()))}, path)
    with pytest.raises(CheckpointError, match="never loaded"):
        load_checkpoint(path)


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1})
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a maskgan-rl checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_latest_good_checkpoint_skips_a_corrupt_newer_one(tmp_path):
    good = save_checkpoint(tmp_path / "gan-1.pt", {"iteration": 1})
    bad = save_checkpoint(tmp_path / "gan-2.pt", {"iteration": 2})
    bad.write_bytes(b"garbage")
    os.utime(good, (1, 1))
    with pytest.warns(UserWarning, match="corrupt"):
        path, payload = latest_good_checkpoint(tmp_path, "gan-*.pt")
    assert path == good and payload["iteration"] == 1
