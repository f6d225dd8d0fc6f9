"""Preview URLs (issue 15): an HTTP and WebSocket reverse proxy from ``/p/{owner}/{env}/{port}/`` to that
port of the environment, over the runner's tunnel; private to the owner unless the port is public.

proxy.py (the ASGI endpoint and who gets through), http.py (HTTP/1.1 to the app, h11), websocket.py (the
app's WebSocket), headers.py (what is rewritten either way), credentials.py (preview cookies), signin.py
(minting one from a web UI session), target.py (paths, URLs, visibility). Imports controlplane and api only.
"""

from __future__ import annotations

from flex.controlplane.preview.target import preview_url

__all__ = ["preview_url"]
