"""One error type for every bad-input problem, so the CLI can print it as a single clear line."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A problem with input data, located as precisely as we know it (``path`` may also be a URL).

    ``str(err)`` reads like ``ratings.csv, line 7, field 'timestamp': expected an integer, got 'abc'``,
    so a user can open the file at the right place without reading a traceback.
    """

    def __init__(
        self,
        path: str | Path | None,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path  # a file, a folder or a URL, as given
        self.line = line
        self.field = field
        self.message = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def __str__(self) -> str:
        return self._format()

    def __reduce__(self):  # keep the keyword-only fields when pickled (e.g. DataLoader workers)
        return (_rebuild, (self.path, self.message, self.line, self.field))


def _rebuild(path, message, line, field) -> DataError:
    return DataError(path, message, line=line, field=field)
