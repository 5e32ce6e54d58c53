"""The tree of one turn as a few lines of text (``coevol show``). Pure: a ``TreeTrace`` in, lines out."""

from __future__ import annotations

from collections.abc import Iterator

from coevol.domain import TreeNodeTrace, TreeTrace

__all__ = ["tree_lines"]

SNIPPET = 60


def _snippet(text: str | None) -> str:
    if text is None:
        return "(no response)"
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= SNIPPET else flat[: SNIPPET - 3] + "...")


def _votes(node: TreeNodeTrace) -> str:
    """The deciding draw's labels: ``3/4 yes`` (one critique had no label), and re-draws."""
    if not node.critiques:
        return ""
    last = [c.label for c in node.critiques if c.draw == node.draws - 1]
    yes, no = last.count(True), last.count(False)
    redraws = f", {node.draws - 1} re-draw(s)" if node.draws > 1 else ""
    return f" {yes}/{yes + no} yes{redraws}"


def _line(node: TreeNodeTrace, on_path: bool) -> str:
    value = "V=  -  " if node.value is None else f"V={node.value:.2f}"
    marks = [m for m, on in (("*path", on_path), ("kept", node.kept)) if on]
    if node.same_as is not None:
        marks.append(f"same as #{node.same_as}")
    if node.judge is not None and node.judge.score_edited is not None:
        marks.append(f"judge {node.judge.score_edited:g} vs {node.judge.score_previous:g}")
    if node.dropped is not None:
        marks.append(f"dropped: {node.dropped}")
    tail = f" [{'; '.join(marks)}]" if marks else ""
    return (
        f"{'  ' * node.depth}#{node.id} d{node.depth} {value}{_votes(node)}{tail} {_snippet(node.response)}"
    )


def _preorder(tree: TreeTrace, node: TreeNodeTrace) -> Iterator[TreeNodeTrace]:
    """``node`` then its subtree; a child is made after its parent, so only later ids descend (a
    hand-edited trace whose parents loop cannot recurse forever)."""
    yield node
    for child in tree.nodes:
        if child.parent == node.id and child.id > node.id:
            yield from _preorder(tree, child)


def tree_lines(tree: TreeTrace) -> list[str]:
    """A header (the settings, nodes, depth reached, path), then each node under its parent."""
    s = tree.settings
    path = " > ".join(f"#{i}" for i in tree.path) or "-"
    head = (
        f"tree: {s.get('algorithm')}, branch {s.get('branch')}, keep {s.get('keep')}, "
        f"depth {s.get('depth')}, gate {s.get('end_gate')}; {s.get('expand')} children, "
        f"{s.get('value')} value; {len(tree.nodes)} node(s), depth reached {tree.depth_reached}; path {path}"
    )
    if not tree.nodes:
        return [head]
    on_path = set(tree.path)
    return [head, *(_line(n, n.id in on_path) for n in _preorder(tree, tree.nodes[0]))]
