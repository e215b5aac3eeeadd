"""The progress line: rate and ETA by hand, throttling, and a resumed run's rate."""

import logging

from maskgan_rl import progress
from maskgan_rl.progress import Progress


def _clock(monkeypatch, *times):
    ticks = iter(times)
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(ticks))


def lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "maskgan_rl.progress"]


def test_rate_and_eta_count_only_the_steps_of_this_process(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="maskgan_rl")
    _clock(monkeypatch, 100.0, 110.0, 3700.0)
    bar = Progress("gan", total=100, unit="it", every_s=0.0, initial=40)  # resumed at 40
    bar.update(50, loss=1.23456)  # 10 iterations in 10 s
    bar.update(70)  # 30 in 3600 s: ETA 30 x 120 s
    assert lines(caplog) == [
        "[gan] 50/100 loss=1.235 | 1.00 it/s, elapsed 0:10, eta 0:50",
        "[gan] 70/100 | 0.01 it/s, elapsed 1:00:00, eta 1:00:00",
    ]


def test_lines_are_throttled_except_the_last_and_forced_ones(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="maskgan_rl")
    _clock(monkeypatch, 0.0, 1.0, 1.5, 2.0, 3.0, 3.5)
    bar = Progress("mle", total=4, every_s=2.0)
    bar.update(1)  # first line always
    bar.update(2)  # 0.5 s later: skipped
    bar.update(2, force=True)
    bar.update(3)  # 1 s after the forced line: skipped
    bar.update(4)  # the last step: always
    assert [line.split(" |")[0] for line in lines(caplog)] == ["[mle] 1/4", "[mle] 2/4", "[mle] 4/4"]
