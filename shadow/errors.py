"""Errors that reach the user as one clear line, never a traceback."""

from __future__ import annotations

import click


class ShadowError(click.ClickException):
    """A user-facing error. `shadow` prints `error: <message>` and exits with `exit_code`."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class ConfigError(ShadowError):
    """A configuration problem, located as precisely as we can: file, line, field."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ""
        if file:
            where = file + (f":{line}" if line else "")
        if field:
            where = f"{where}: {field}" if where else field
        super().__init__(f"{where}: {message}" if where else message)


class CaptureError(ShadowError):
    """A capture folder that cannot be read: missing, empty, or holding an unreadable file."""
