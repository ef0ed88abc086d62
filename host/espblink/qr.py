"""The Wi-Fi join QR code a phone camera understands, drawn in the terminal."""

from __future__ import annotations

import io

import segno


def wifi_payload(ssid: str, key: str) -> str:
    def esc(s: str) -> str:
        for c in '\\;,:"':
            s = s.replace(c, "\\" + c)
        return s

    return f"WIFI:T:WPA;S:{esc(ssid)};P:{esc(key)};;"


def terminal(ssid: str, key: str) -> str:
    out = io.StringIO()
    segno.make(wifi_payload(ssid, key), error="m").terminal(out=out, compact=True)
    return out.getvalue()
