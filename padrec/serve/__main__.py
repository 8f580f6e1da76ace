"""``python -m padrec.serve --run DIR``: the ``padrec serve`` command on its own (tests, benchmarks)."""

from __future__ import annotations

import typer

from padrec.serve.cli import register

app = typer.Typer(add_completion=False)
register(app)

if __name__ == "__main__":
    app()
