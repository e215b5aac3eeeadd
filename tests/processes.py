"""The processes and servers a test starts: free loopback ports, and the processes found through /proc
(Linux) by session, with everything they started."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, session id, state) from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command name is in parentheses and may hold spaces: split after the last ")".
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # exited meanwhile
            table[int(entry.name)] = (int(fields[1]), int(fields[3]), fields[0])
    return table


def session_processes(sessions: list[int]) -> dict[int, str]:
    """pid -> command line of every live process in `sessions`, plus their descendants in sessions
    of their own. (A process started with start_new_session=True leads a session whose id is its pid.)"""
    table = process_table()
    ours = {pid for pid, (_, sid, _) in table.items() if sid in sessions}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in ours} - ours
        grew = bool(children)
        ours |= children
    return {pid: cmdline(pid) for pid in ours if table[pid][2] != "Z"}  # zombies hold nothing


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def send_signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
