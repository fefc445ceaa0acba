"""Native stacks through py-spy: ``py-spy dump --pid <pid> --json``, parsed and mapped.

py-spy reads another process's memory with ptrace, so it sees what ``sys._current_frames()``
cannot: native frames, and a process whose GIL is held by a thread that never lets go.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import PySpyError
from ._kinds import ThreadKind
from ._registry import ThreadRegistry
from ._waiting import RUNNING, waiting_on

# prctl(2): let one named process ptrace us, under Yama's ptrace_scope=1.
PR_SET_PTRACER = 0x59616D61

_PTRACE_HINTS = ("operation not permitted", "permission denied", "os error 1)", "os error 13)")


@dataclass(frozen=True, slots=True)
class PySpyThread:
    """One thread as py-spy saw it, frames innermost last (the in-process frame model)."""

    thread_id: int
    os_thread_id: int | None
    name: str | None
    active: bool
    owns_gil: bool
    frames: list[dict[str, Any]]
    record_id: int | None = None
    kind: ThreadKind | None = None
    waiting_on: str = RUNNING

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "thread_id": self.thread_id,
            "os_thread_id": self.os_thread_id,
            "name": self.name,
            "active": self.active,
            "owns_gil": self.owns_gil,
            "frames": self.frames,
            "record_id": self.record_id,
            "kind": self.kind.value if self.kind else None,
            "waiting_on": self.waiting_on,
        }


def find_pyspy() -> str | None:
    """The py-spy executable: next to this interpreter (a venv) first, then on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("py-spy")


def _frame(raw: dict[str, Any]) -> dict[str, Any]:
    name = str(raw.get("name") or "")
    filename = str(raw.get("filename") or "")
    # py-spy --native marks no frame as native explicitly; native frames have no Python
    # source file (a shared object or "?"), Python frames end in .py.
    native = not filename.endswith(".py")
    return {
        "filename": filename,
        "lineno": raw.get("line"),
        "function": name.rsplit(".", 1)[-1],
        "qualname": name,
        "line": None,
        "native": native,
        "module": raw.get("module"),
    }


def parse_pyspy_json(text: str, registry: ThreadRegistry | None = None) -> list[PySpyThread]:
    """Parse ``py-spy dump --json`` output; map threads to ``registry`` records when given.

    py-spy's ``thread_id`` is the pthread ident (``threading.get_ident()``) and its
    ``os_thread_id`` the kernel id (``threading.get_native_id()``).
    """
    try:
        raw_threads = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PySpyError(f"py-spy printed something that is not JSON: {exc}") from exc
    if not isinstance(raw_threads, list):
        raise PySpyError("py-spy JSON is not a list of threads")
    by_native: dict[int, Any] = {}
    if registry is not None:
        for r in registry.live_records():
            if r.native_id is not None:
                by_native[r.native_id] = r
    foreign = {t.ident: fid for fid, t in registry.foreign_threads()} if registry else {}
    out: list[PySpyThread] = []
    for raw in raw_threads:
        frames = [_frame(f) for f in raw.get("frames") or []]
        frames.reverse()  # py-spy lists the innermost frame first
        ident = int(raw.get("thread_id") or 0)
        native_id = raw.get("os_thread_id")
        record_id: int | None = None
        kind: ThreadKind | None = None
        if registry is not None:
            record = registry.record_for_ident(ident)
            if record is None and native_id is not None:
                record = by_native.get(int(native_id))
            if record is not None:
                record_id, kind = record.record_id, record.kind
            else:
                record_id, kind = foreign.get(ident), ThreadKind.FOREIGN
        out.append(
            PySpyThread(
                thread_id=ident,
                os_thread_id=int(native_id) if native_id is not None else None,
                name=raw.get("thread_name"),
                active=bool(raw.get("active")),
                owns_gil=bool(raw.get("owns_gil")),
                frames=frames,
                record_id=record_id,
                kind=kind,
                waiting_on=waiting_on(frames),
            )
        )
    return out


def _set_ptracer(pid: int) -> bool:
    """Allow ``pid`` to ptrace this process (Yama ptrace_scope 1); True when it was called."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PTRACER, ctypes.c_ulong(pid), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _needs_ptracer(pid: int) -> bool:
    # Root (CAP_SYS_PTRACE) may attach regardless; so may anyone when Yama is off (0). Only a
    # non-root dump of *this* process under ptrace_scope 1 needs the prctl handshake.
    if os.geteuid() == 0 or pid != os.getpid():
        return False
    try:
        scope = Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()
    except OSError:
        return False
    return scope == "1"


def pyspy_dump(
    pid: int | None = None,
    *,
    native: bool = False,
    timeout: float = 10.0,
    registry: ThreadRegistry | None = None,
    executable: str | None = None,
) -> list[PySpyThread]:
    """Run ``py-spy dump --pid <pid> --json`` (``--native`` optionally) and parse it.

    ``pid`` defaults to this process. Raises :class:`PySpyError` when py-spy is missing,
    exceeds ``timeout`` seconds, is not allowed to ptrace, or fails otherwise.
    """
    target = os.getpid() if pid is None else pid
    exe = executable or find_pyspy()
    if exe is None or not Path(exe).exists():
        raise PySpyError("py-spy is not installed (pip install py-spy) or not on PATH")
    args = [exe, "dump", "--pid", str(target), "--json"]
    if native:
        args.append("--native")
    gate = _needs_ptracer(target)
    if gate:
        # The child must not attach before prctl(PR_SET_PTRACER, child) names it: start it
        # behind a shell that waits for one line on stdin, then exec's py-spy (same pid).
        args = ["/bin/sh", "-c", 'read -r _ && exec "$0" "$@"', *args]
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if gate else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as exc:
        raise PySpyError(f"could not run py-spy ({exe}): {exc}") from exc
    try:
        if gate:
            _set_ptracer(proc.pid)
        stdout, stderr = proc.communicate("go\n" if gate else None, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise PySpyError(f"py-spy dump of pid {target} timed out after {timeout:.1f}s") from None
    finally:
        if gate:
            _set_ptracer(0)
    if proc.returncode != 0:
        detail = (stderr or stdout).strip()
        lowered = detail.lower()
        if any(h in lowered for h in _PTRACE_HINTS):
            raise PySpyError(
                f"ptrace not permitted: py-spy cannot attach to pid {target} ({detail}); "
                "run as root, grant CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=0"
            )
        raise PySpyError(f"py-spy dump failed (exit {proc.returncode}): {detail}")
    return parse_pyspy_json(stdout, registry)
