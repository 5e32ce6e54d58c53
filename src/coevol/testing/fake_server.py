"""Deprecated location of the fake server: import from ``coevol.testing`` instead.

Kept only so code written against the old path keeps importing; ``python -m coevol.testing`` is
the command-line entry. The fault model, the server and the subprocess helpers now live in
``coevol.testing.faults``, ``coevol.testing.server`` and ``coevol.testing.cli``.
"""

from coevol.testing.cli import fetch_stats, main, reset_stats, serve_in_subprocess
from coevol.testing.faults import Fault, FaultKind, FaultPolicy, always, body_digest, first_attempt_faults
from coevol.testing.server import FakeOpenAIServer, RecordedRequest, Reply, Responder, echo_responder

__all__ = [
    "FakeOpenAIServer",
    "Fault",
    "FaultKind",
    "FaultPolicy",
    "RecordedRequest",
    "Reply",
    "Responder",
    "always",
    "body_digest",
    "echo_responder",
    "fetch_stats",
    "first_attempt_faults",
    "main",
    "reset_stats",
    "serve_in_subprocess",
]

if __name__ == "__main__":
    main()
