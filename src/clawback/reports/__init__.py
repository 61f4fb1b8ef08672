"""What the ledger and the running stack say, as documents and checks.

``period`` builds the day / week / month report and ``render`` writes it as Markdown or one self-contained
HTML file; ``health`` checks every part of the stack (``clawback health``); ``performance`` compares a period's
latency, throughput and cost per request with a stored baseline (``clawback validate-performance``).
"""

__all__: list[str] = []
