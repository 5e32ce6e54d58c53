"""The agents (debaters, advisor, editor, judge) and the pure verdict logic they rely on."""
