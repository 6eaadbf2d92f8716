"""Failpoints: named places where a crash test can make this process die at once.

The crash-safety promises — nothing lost, nothing sent twice, no claim left to a dead
worker — are proved by killing real worker processes at the worst moments: just after a
claim, while a render runs, after the mail server accepted a message but before the
state was committed, in the middle of a ledger write. ``SOLIDARITY_FAULT=NAME`` (or
``NAME@N`` for the N-th time the process passes there; ``NAME:QUALIFIER`` for one kind,
such as ``delivery-sent:email``) makes the process SIGKILL itself
when it reaches :func:`point` ``NAME``: no cleanup, no ``finally``, exactly as the kernel's
OOM killer or a pulled plug would. Unset, a point costs one comparison.
"""

from __future__ import annotations

import os
import signal

ENV = "SOLIDARITY_FAULT"
POINTS = frozenset(
    {
        "bundle-claimed",  # a planned bundle claimed, nothing rendered yet
        "render-begun",  # about to render (qualified by the bundle id: a poison bundle)
        "render-started",  # the render processes at work on it
        "render-published",  # the PDF renamed into the outbox, the database not told
        "delivery-claimed",  # a delivery claimed, nothing sent
        "delivery-sent",  # the provider accepted it; its state not committed yet
        "ledger-appended",  # events written inside a transaction not committed yet
    }
)

_wanted, _, _nth = os.environ.get(ENV, "").partition("@")
_after = int(_nth) if _nth.isdigit() else 1
_passed = 0


def point(name: str, *qualifiers: str) -> None:
    """Die here, now, when the environment asks for this point (and this pass).

    ``qualifiers`` narrow it: ``delivery-sent:email`` is passed only by e-mail deliveries.
    """
    global _passed
    if not _wanted or (name != _wanted and _wanted not in {f"{name}:{q}" for q in qualifiers}):
        return
    _passed += 1
    if _passed >= _after:
        os.kill(os.getpid(), signal.SIGKILL)
