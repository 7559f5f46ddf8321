"""Built-in network policies: restricted (default), allowlist and open."""
