"""SPaR's tree-search refinement over one sample, and the CoEvol tree. Calls go through ``generate``.

The search (thu-coai/SPaR ``src/ToT/bfs.py`` and ``dfs.py``, re-implemented):

1. The critic judges the original first: ``votes`` sampled critiques, V = #Yes / (#Yes + #No). V
   above ``end_gate`` keeps the original (``root_passes``) and nothing else is sent.
2. Each node kept for expansion gets ``branch`` children: the refiner rewrites the node's response
   from the critique the critic gave it (``--tree-expand spar``), or CoEvol's debate, advice and
   edit rewrite it (``coevol``). A level's children are produced concurrently, then valued
   concurrently; a child identical to a node already valued takes that value without a call.
3. A child whose V is above the gate ends the search and is written (``tree_pass``). Otherwise the
   ``keep`` best children of the level (ties to the later node) are expanded next, breadth-first
   (``bfs``: level by level) or depth-first (``dfs``: each kept child's subtree before the next),
   down to ``depth``.
4. Nothing passed: the original stays (``tree_no_pass``); the trace names the node with the highest
   value (ties to the later node) and the path to it.

Values are the critic's pass rate, or with ``--tree-value pairwise`` the both-orders judge's
preference for the child over the original (``pairwise_value``). Every request's seed is derived
from the sample, the node's path and the child, the try or the draw, so a rerun sends the same
requests and the store replays them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Iterable, Sequence
from typing import TypeVar

import orjson

from coevol.domain import (
    Answer,
    Completion,
    CritiqueTrace,
    Failure,
    Generate,
    IterationTrace,
    JudgeTrace,
    Message,
    StopReason,
    TreeNodeTrace,
    TreeTrace,
)
from coevol.errors import AuthenticationError, ContextLengthError, LLMError, NotFoundError
from coevol.loop import LoopSettings, Refinement, UsageLedger, failure_stop, unusable_edit
from coevol.prompts.render import Sample
from coevol.prompts.templates import PromptSet
from coevol.roles import agents
from coevol.roles.spar import (
    critic_messages,
    derive_seed,
    extract_refined,
    label_of,
    majority_index,
    pass_rate,
    refine_messages,
    tied,
)
from coevol.tree.settings import TREE_ROLES, TreeSettings

__all__ = ["CRITIC", "REFINER", "TREE_ROLES", "pairwise_value", "tree_refine"]

CRITIC, REFINER = TREE_ROLES

_T = TypeVar("_T")


async def _all(calls: Iterable[Awaitable[_T]]) -> list[_T]:
    """Run concurrently; the first failure cancels the rest (the sample has failed) and is raised."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # a no-op for a finished task
    errors = [t.exception() for t in tasks if t.done() and not t.cancelled()]
    for error in errors:  # every exception read, so asyncio has none to report as lost
        if error is not None:
            raise error
    return [t.result() for t in tasks]


async def _or_drop(node: TreeNodeTrace, step: Awaitable[None]) -> None:
    """A child whose prompt outgrew the model's context is dropped, not the whole sample (a
    refiner's long answer must not cost the row; the original and its critique fit)."""
    try:
        await step
    except ContextLengthError as exc:
        node.value = None
        node.dropped = f"the prompt outgrew the model's context ({exc})"


def pairwise_value(judge: JudgeTrace) -> float | None:
    """The judge's preference for the child over the original, in [0, 1]: its Eq. 4 average over
    both orders as a share, s(child) / (s(child) + s(original)); above 0.5 exactly when Eq. 4
    would accept the child. None when a verdict stayed unparseable."""
    if judge.score_edited is None or judge.score_previous is None:
        return None
    total = judge.score_edited + judge.score_previous
    return 0.5 if total == 0 else judge.score_edited / total


def _rank(nodes: Sequence[TreeNodeTrace]) -> list[TreeNodeTrace]:
    """Highest value first; among equal values the later node first."""
    return sorted(nodes, key=lambda n: (n.value or 0.0, n.id), reverse=True)


def _sample_key(sample: Sample, seed: int | None) -> str:
    """What seeds are derived from: the sample as the agents see it, and the run's own seed."""
    text = orjson.dumps([sample.instruction, sample.input, sample.response, seed])
    return hashlib.sha256(text).hexdigest()[:16]


def _answer(completion: Completion) -> Answer:
    return Answer(completion.text, completion.finish_reason)


class _Search:
    """One sample's tree: its nodes, the values found so far, the calls through ``ledger``."""

    def __init__(
        self,
        sample: Sample,
        ledger: UsageLedger,
        prompts: PromptSet,
        settings: TreeSettings,
        loop: LoopSettings,
    ) -> None:
        self.sample = sample
        self.ledger = ledger
        self.prompts = prompts
        self.settings = settings
        self.loop = loop
        self.key = _sample_key(sample, settings.seed)
        self.trace = TreeTrace(settings.to_dict())
        self.paths: dict[int, str] = {}
        self.valued: dict[str, int] = {}  # response -> the node that holds its value

    # nodes -------------------------------------------------------------------------------------
    def add(self, parent: TreeNodeTrace | None, index: int = 0) -> TreeNodeTrace:
        node = TreeNodeTrace(len(self.trace.nodes), None if parent is None else parent.id, 0)
        if parent is None:
            self.paths[node.id] = "0"
        else:
            node.depth = parent.depth + 1
            self.paths[node.id] = f"{self.paths[parent.id]}.{index}"
        self.trace.nodes.append(node)
        return node

    def holder(self, node: TreeNodeTrace) -> TreeNodeTrace:
        """The node whose critiques and value ``node`` shares (itself unless it is a copy)."""
        return node if node.same_as is None else self.trace.nodes[node.same_as]

    def path_to(self, node: TreeNodeTrace) -> list[int]:
        path = [node.id]
        while node.parent is not None:
            node = self.trace.nodes[node.parent]
            path.append(node.id)
        return path[::-1]

    # the critic --------------------------------------------------------------------------------
    async def _votes(self, node: TreeNodeTrace, draw: int) -> list[CritiqueTrace]:
        """One draw of ``votes`` critiques: one request with ``n`` when allowed, the choices a
        server did not give (llama.cpp gives one) asked one request each."""
        assert node.response is not None
        msgs = critic_messages(self.prompts, self.sample, node.response)
        votes, rule = self.settings.votes, self.settings.label
        base = derive_seed(self.key, "critic", self.paths[node.id], draw)

        def critique(answer: Answer, choice: int, seed: int) -> CritiqueTrace:
            return CritiqueTrace(answer, label_of(answer.text, rule), draw, choice, seed)

        got: list[CritiqueTrace] = []
        if self.settings.use_n and votes > 1:
            answer = await self.ledger(CRITIC, msgs, seed=base, n=votes)
            choices = answer.choices()[:votes]
            got = [critique(Answer(c.text, c.finish_reason), i, base) for i, c in enumerate(choices)]
        seeds = [derive_seed(base, i) for i in range(len(got), votes)]
        singles = await _all(self.ledger(CRITIC, msgs, seed=s) for s in seeds)
        return got + [critique(_answer(c), 0, s) for c, s in zip(singles, seeds, strict=True)]

    async def critic(self, node: TreeNodeTrace) -> bool:
        """Draw critiques until the labels are not tied (at most ``draws`` times); set ``value`` and
        the critique shown to the refiner. False when they stayed tied."""
        for draw in range(self.settings.draws):
            found = await self._votes(node, draw)
            before = len(node.critiques)
            node.critiques += found
            node.draws = draw + 1
            labels = [c.label for c in found]
            if not tied(labels):
                node.value = pass_rate(labels)
                shown = majority_index(labels)
                node.shown = None if shown is None else before + shown
                return True
        return False

    async def critique_of(self, node: TreeNodeTrace) -> str:
        """The critique the refiner is shown for ``node``'s children. With the pairwise value the
        critic is asked for it only here, its value not used; a tie shows the last draw's first."""
        node = self.holder(node)
        if node.shown is None:
            if not node.critiques:
                value = node.value
                await self.critic(node)
                if self.settings.value != "critic":
                    node.value = value
            if node.shown is None:
                node.shown = len(node.critiques) - self.settings.votes
        return node.critiques[node.shown].answer.text

    # children ----------------------------------------------------------------------------------
    async def _refine(self, parent: TreeNodeTrace, node: TreeNodeTrace) -> None:
        assert parent.response is not None
        critique = await self.critique_of(parent)
        msgs = refine_messages(self.prompts, self.sample, parent.response, critique)
        for attempt in range(self.settings.tries):
            seed = derive_seed(self.key, "refine", self.paths[node.id], attempt)
            answer = _answer(await self.ledger(REFINER, msgs, seed=seed))
            node.refine.append(answer)
            node.seeds.append(seed)
            found = extract_refined(answer.text)
            if found is not None:
                node.response = found
                return
        tries = self.settings.tries
        node.dropped = f"the refiner gave no output between [[start]] and [[end]] in {tries} tries"

    async def _coevolve(self, parent: TreeNodeTrace, node: TreeNodeTrace) -> None:
        """CoEvol's debate, advice and edit on the parent, every call seeded for this child."""
        assert parent.response is not None
        seed = derive_seed(self.key, "expand", self.paths[node.id])
        ledger = self.ledger

        async def seeded(
            role: str, messages: Sequence[Message], *, attempt: int = 0, **_: object
        ) -> Completion:
            return await ledger(role, messages, attempt=attempt, seed=seed)

        generate: Generate = seeded
        x = self.sample.with_response(parent.response)
        it = node.iteration = IterationTrace(iteration=node.id, previous=parent.response)
        node.seeds.append(seed)
        it.debate = await agents.debate(generate, self.prompts, x)
        it.suggestions = await agents.advise(generate, self.prompts, x, it.debate)
        it.edit = await agents.edit(generate, self.prompts, x, it.suggestions.text)
        it.edited = agents.clean_edit(it.edit.text)
        unusable = unusable_edit(it.edit, it.edited, parent.response)
        if unusable is not None:
            node.dropped = f"the edit is {unusable.value}"
            return
        node.response = it.edited

    async def produce(self, parent: TreeNodeTrace, node: TreeNodeTrace) -> None:
        if self.settings.expand == "spar":
            await self._refine(parent, node)
        else:
            await self._coevolve(parent, node)

    async def value(self, node: TreeNodeTrace) -> None:
        if self.settings.value == "critic":
            if not await self.critic(node):
                node.dropped = f"the critic's votes stayed tied after {self.settings.draws} draws"
            return
        assert node.response is not None
        node.judge = await agents.judge(
            self.ledger,
            self.prompts,
            self.sample,
            node.response,
            kind=self.loop.judge,
            reasks=self.loop.judge_reasks,
        )
        node.value = pairwise_value(node.judge)
        if node.value is None:
            node.dropped = "the judge gave no usable verdict"

    async def grow(self, parents: Sequence[TreeNodeTrace]) -> list[TreeNodeTrace]:
        """The children of ``parents``: produced concurrently, then valued concurrently (each
        distinct response once, in node order); returns those with a value."""
        if self.settings.expand == "spar":  # each parent's critique once, before its children ask
            holders = {self.holder(p).id: self.holder(p) for p in parents}
            await _all(self.critique_of(h) for h in holders.values())
        children = [(p, self.add(p, i)) for p in parents for i in range(self.settings.branch)]
        await _all(_or_drop(c, self.produce(p, c)) for p, c in children)
        made = [c for _, c in children if c.response is not None]
        fresh: list[TreeNodeTrace] = []
        for child in made:
            assert child.response is not None
            earlier = self.valued.get(child.response)
            if earlier is None:
                self.valued[child.response] = child.id
                fresh.append(child)
            else:
                child.same_as = earlier
        await _all(_or_drop(c, self.value(c)) for c in fresh)
        for child in made:
            if child.same_as is not None:
                holder = self.trace.nodes[child.same_as]
                child.value = holder.value
                if child.value is None:
                    child.dropped = f"the same response as node {holder.id}, which has no value"
        return [c for c in made if c.value is not None]

    # the search --------------------------------------------------------------------------------
    def passing(self, children: Sequence[TreeNodeTrace]) -> TreeNodeTrace | None:
        best = _rank(children)[0]
        return best if (best.value or 0.0) > self.settings.end_gate else None

    def select(self, children: Sequence[TreeNodeTrace]) -> list[TreeNodeTrace]:
        chosen = _rank(children)[: self.settings.keep]
        for node in chosen:
            node.kept = True
        return chosen

    async def bfs(self, root: TreeNodeTrace) -> TreeNodeTrace | None:
        level = [root]
        for depth in range(1, self.settings.depth + 1):
            children = await self.grow(level)
            if not children:
                return None
            found = self.passing(children)
            if found is not None or depth == self.settings.depth:
                return found
            level = self.select(children)
        return None

    async def dfs(self, node: TreeNodeTrace) -> TreeNodeTrace | None:
        if node.depth >= self.settings.depth:
            return None
        children = await self.grow([node])
        if not children:
            return None
        found = self.passing(children)
        if found is not None or node.depth + 1 >= self.settings.depth:
            return found
        for child in self.select(children):
            found = await self.dfs(child)
            if found is not None:
                return found
        return None

    async def run(self) -> Refinement:
        """The whole search; the original unless a node passes the gate."""
        original = self.sample.response
        root = self.add(None)
        root.response = original
        self.valued[original] = root.id
        if self.settings.value == "critic":
            if not await self.critic(root):
                return self.finish(None, StopReason.ROOT_UNDECIDED)
            root.kept = True
            if (root.value or 0.0) > self.settings.end_gate:
                return self.finish(root, StopReason.ROOT_PASSES)
        else:
            root.value = 0.5  # the original against itself
        found = await (self.bfs(root) if self.settings.algorithm == "bfs" else self.dfs(root))
        if found is not None:
            return self.finish(found, StopReason.TREE_PASS)
        valued = [n for n in self.trace.nodes if n.value is not None]
        return self.finish(_rank(valued)[0] if valued else None, StopReason.TREE_NO_PASS)

    def finish(self, result: TreeNodeTrace | None, stop: StopReason) -> Refinement:
        """The refinement: ``result``'s response only when it passed the gate as a child."""
        trace = self.trace
        trace.usage = self.ledger.take()
        response = self.sample.response
        if result is not None:
            trace.result, trace.path = result.id, self.path_to(result)
            if stop is StopReason.TREE_PASS and result.response is not None:
                response = result.response
        accepted = int(response != self.sample.response)
        return Refinement(response, accepted, stop, [], tree=trace)


async def tree_refine(
    sample: Sample, generate: Generate, prompts: PromptSet, settings: LoopSettings
) -> Refinement:
    """The tree strategy for one sample; a failed call is recorded, not raised (as ``coevolve``)."""
    assert settings.tree is not None
    search = _Search(sample, UsageLedger(generate), prompts, settings.tree, settings)
    try:
        return await search.run()
    except (AuthenticationError, NotFoundError):
        raise  # a misconfigured run, not a bad sample: stop everything
    except LLMError as exc:
        search.trace.usage = search.ledger.take()
        return Refinement(sample.response, 0, failure_stop(exc), [], Failure.of(exc), tree=search.trace)
