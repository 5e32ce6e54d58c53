"""Time the ``--max-budget`` check the dispatcher runs after every answer.

    python benchmarks/budget_check.py

0.2 recomputed the spend over every role through ``Config.role()`` (a pydantic model built per
role, per call): 119 us per call in issue 19's profile, 255 us on the shared 2-core machine under
load. The run plan resolves each role's price once and the ``Guard`` keeps a running spend, so
the check is a dictionary lookup, two multiplications and a comparison: 2.1 us per call measured
on the same loaded machine (timeit, 200,000 calls, the lambda's own call included).
"""

from __future__ import annotations

import timeit

from coevol.config import Config, Price
from coevol.engine.runplan import RunPlan
from coevol.engine.stops import Guard
from coevol.llm.types import Completion


def main() -> None:
    config = Config(
        base_url="http://127.0.0.1:9/v1", model="m", max_budget=1e9, price=Price(prompt=1, completion=2)
    )
    plan = RunPlan.of(config)
    guard = Guard(plan.stops, plan.prices())
    answer = Completion("ok", prompt_tokens=1000, completion_tokens=500)
    calls = 200_000
    seconds = timeit.timeit(lambda: guard.after_send("judge", answer), number=calls)
    print(f"budget check: {seconds / calls * 1e6:.2f} us per call ({calls:,} calls)")


if __name__ == "__main__":
    main()
