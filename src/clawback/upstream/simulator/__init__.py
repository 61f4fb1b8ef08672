"""A faithful stand-in for the Anthropic API, for tests, the demo and benchmarks."""
