"""``cci setup``: prepare this machine for real use (Incus, storage, network, the user's access, the image)."""
