"""``python -m coevol.testing``: run the fake OpenAI-compatible server (see ``coevol.testing.cli``)."""

from coevol.testing.cli import main

main()
