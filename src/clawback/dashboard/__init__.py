"""The cost dashboard (``clawback dashboard``): a Streamlit app over the ledger's rollup tables.

``data`` is the data layer (every query, SQLite and PostgreSQL alike); ``charts`` turns its frames into the
dashboard's Vega-Lite charts and ``figures`` into the Plotly figures of ``clawback report`` (one HTML file);
``app`` is the Streamlit script, ``server`` starts it.
"""

__all__: list[str] = []
