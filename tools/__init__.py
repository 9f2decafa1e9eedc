"""Offline commands registered by the one `ltx-server` CLI: `generate` and `weights`."""
