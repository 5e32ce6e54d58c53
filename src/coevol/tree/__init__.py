"""The tree strategy (``--strategy tree``): SPaR's tree-search refinement and the CoEvol tree.

- ``coevol.roles.spar``: the critic and refiner roles, with their pure parsing (critique labels,
  refined-output markers, the pass rate, seeds) pinned by golden tests;
- ``coevol.tree.settings``: the search's knobs;
- ``coevol.tree.search``: the search itself over an injected ``generate``.
"""
