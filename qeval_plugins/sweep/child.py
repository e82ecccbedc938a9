"""The lm_eval child process of a unit: started so that it dies with its parent, waited for in
the thread that started it, and stoppable from another thread (Ctrl-C of a parallel sweep)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` that makes the child receive SIGTERM when this process dies,
    however it dies (``kill -9`` included): ``prctl(PR_SET_PDEATHSIG, SIGTERM)``. None elsewhere
    (macOS, Windows: no such call; the child runs on until it ends, README "Known limitations").

    The kernel sends the signal when the *thread* that started the child ends: the caller must
    wait for the child in that thread (``subprocess.call`` does). A parent that died between the
    fork and the ``prctl`` is noticed (the child's parent is then another process) and the child
    ends at once. ``prctl`` is looked up before the fork: nothing is loaded in the child.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM))
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _own_group_dying_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: the child gets its own process group, so Ctrl-C at the terminal
    reaches only the sweep, which then stops its children itself (:func:`stop_children`), and it
    dies with its parent (:func:`die_with_parent`)."""
    die = die_with_parent()

    def preexec() -> None:
        os.setpgid(0, 0)
        if die is not None:
            die()

    return preexec


_RUNNING: set[subprocess.Popen] = set()  # children started by run_child, not yet ended
_RUNNING_LOCK = threading.Lock()


def run_child(command: list[str], log, env: dict[str, str] | None = None) -> int:
    """Run ``command`` with stdout and stderr into the open file ``log``, no stdin, and ``env``
    added to this process's environment; its exit status. The child has its own process group,
    dies with this process (:func:`die_with_parent`) and :func:`stop_children` ends it from any
    thread."""
    environment = {**os.environ, **env} if env else None
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,  # a prompt (trust_remote_code?) ends instead of waiting unseen
        stdout=log,
        stderr=subprocess.STDOUT,
        env=environment,
        preexec_fn=_own_group_dying_with_parent(),
    ) as child:
        with _RUNNING_LOCK:
            _RUNNING.add(child)
        try:
            return child.wait()
        except BaseException:  # Ctrl-C in this thread: the child must not outlive the wait
            child.kill()
            child.wait()
            raise
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(child)


def stop_children() -> int:
    """Send SIGTERM to every child :func:`run_child` started that is still running; how many.
    Their ``run_child`` calls then return (a negative status) in their own threads."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for child in running:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
    return len(running)
