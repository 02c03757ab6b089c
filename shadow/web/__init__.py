"""The live view: a web UI over a capture that updates while traffic is captured.

`shadow serve CAPTURE` or `shadow gateway FILE --live-view HOST:PORT` (docs/live-view.md).
live.py keeps the analysis current, views.py shapes it per page, app.py serves the pages
(Starlette + Jinja2 templates/, htmx under static/: no CDN, works offline), server.py runs it."""
