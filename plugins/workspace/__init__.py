"""The workspace guard: protected paths, end-of-session changes report, setuid clearing (docs/security.md)."""
