"""The stop rules of one job, enforced in one place for every entry point.

A ``Guard`` is the dispatcher's ``after_send`` hook (``--max-budget`` is checked after every call
actually sent, so a run overshoots by at most the calls in flight, not by whole samples) and is
told about every finished item (a refined row, a judged pair). It keeps running counts (the spend
from per-role prices resolved once in the run plan), so each check is O(1) whatever the run's
size; once tripped it stays tripped, so a job that
goes on (the next Ray Data batch) stops at its first check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from coevol.engine.runplan import StopRules
from coevol.errors import BudgetExceeded, ConfigError
from coevol.llm.types import Completion

__all__ = ["Guard"]


class Guard:
    """Raises ``BudgetExceeded`` (budget, errors) or ``ConfigError`` (a judge without verdicts)."""

    def __init__(
        self, rules: StopRules, prices: Mapping[str, tuple[float, float]], *, items: str = "samples"
    ) -> None:
        self.rules = rules
        self._prices = dict(prices)
        self._spent = 0.0  # dollars x 1e6: exact sums of token counts x whole-dollar prices
        self._items = items  # what failed, in the message: "samples", "pairs"
        self.failures: Counter[str] = Counter()  # fresh failed items by cause
        self._example: dict[str, str] = {}
        self.judged = 0
        self.unparseable = 0

    @property
    def spent(self) -> float:
        """Dollars spent on the answers this job was sent (0 without prices)."""
        return self._spent / 1e6

    def after_send(self, role: str, completion: Completion) -> None:
        """The dispatcher's hook after every answer it was sent: add its price, check the budget."""
        price = self._prices.get(role)
        if price is not None:
            self._spent += completion.prompt_tokens * price[0] + completion.completion_tokens * price[1]
        self._check_budget()

    def _check_budget(self) -> None:
        budget = self.rules.max_budget
        if budget is not None and self._spent >= budget * 1e6:
            raise BudgetExceeded(f"spent ${self.spent:.4f} of --max-budget ${budget}")

    def after_item(
        self, *, failure: tuple[str, str] | None = None, judged: int = 0, unparseable: int = 0
    ) -> None:
        """Count one finished item, then check every rule.

        ``failure``: (cause, message) of an item that failed in this job (a replayed failure is old
        news and is not passed); ``judged``/``unparseable``: its judge comparisons, and how many of
        them stayed without a usable verdict.
        """
        if failure is not None:
            cause, message = failure
            self.failures[cause] += 1
            self._example.setdefault(cause, message)
        self.judged += judged
        self.unparseable += unparseable
        self.check()

    def check(self) -> None:
        """Every rule against the counts so far."""
        self._check_errors()
        self._check_budget()
        self._check_judge()

    def _check_errors(self) -> None:
        limit = self.rules.max_errors
        failed = sum(self.failures.values())
        if limit is not None and failed > limit:
            causes = "; ".join(
                f"{n} x {cause}: {_shorten(self._example[cause])}" for cause, n in self.failures.most_common()
            )
            raise BudgetExceeded(f"{failed} {self._items} failed, more than --max-errors {limit} ({causes})")

    def _check_judge(self) -> None:
        threshold = self.rules.max_unparseable
        judged, bad = self.judged, self.unparseable
        if threshold is None or judged < self.rules.min_judged or bad / judged <= threshold:
            return
        raise ConfigError(
            f"the judge gave no usable verdict in {bad} of {judged} comparisons "
            f"({bad / judged:.0%}, more than max_unparseable {threshold:.0%}): check the judge "
            "model (it must answer with the verdict on its first line) and its prompt"
        )


def _shorten(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
