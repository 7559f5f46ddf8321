"""Where things are inside a cci container: the container user, its home, the workspace mount."""

CONTAINER_USER = "code"
CONTAINER_HOME = f"/home/{CONTAINER_USER}"
WORKSPACE_PATH = "/workspace"
