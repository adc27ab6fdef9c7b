"""All finding rules, in one list."""

ALL = []
