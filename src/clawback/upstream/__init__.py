"""Talking to the Anthropic API, or to the simulator that stands in for it."""
