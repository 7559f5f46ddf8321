"""The Incus container backend."""
