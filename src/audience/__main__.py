from audience.cli import app

app()
