"""Built-in tool adapters."""
