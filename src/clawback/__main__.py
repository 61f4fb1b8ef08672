from clawback.cli import app

app()
