"""The cost dashboard (``clawback dashboard``): a Streamlit app over the ledger's rollup tables.

``data`` is the data layer (every query, SQLite and PostgreSQL alike), ``figures`` turns its frames into Plotly
figures (shared with ``clawback report``), ``app`` is the Streamlit script, ``server`` starts it.
"""

__all__: list[str] = []
