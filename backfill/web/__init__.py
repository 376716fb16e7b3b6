"""The web page and HTTP API (DESIGN section 7)."""
