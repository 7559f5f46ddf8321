"""How a workspace mount keeps host ownership: a ``raw.idmap`` entry, not an idmapped mount.

Files the container user writes must belong to the invoking host user. An
idmapped mount (``shift=true``) would show host uid N as container uid N for
*every* N: root in the container (which the agent is, through sudo) could then
make files owned by the host's root, setuid ones included, in the workspace,
for anyone on the host to run. So cci maps the host user alone onto the
container user with ``raw.idmap``: everything else the container writes there
belongs to its unprivileged range. Incus allows that only for ids delegated to
root in /etc/subuid and /etc/subgid (``root:<uid>:1``).

Host root is the exception: mapping uid 0 into a container would hand it root's
files, so root's sessions use idmapped mounts.
"""

from __future__ import annotations

from typing import NamedTuple


class UserMap(NamedTuple):
    """The invoking host user and the container user their files should belong to."""

    host_uid: int
    host_gid: int
    container_uid: int

    def needs_raw_idmap(self) -> bool:
        """Whether shifted mounts use ``raw.idmap`` instead of an idmapped mount: for every user but root."""
        return self.host_uid != 0

    def raw_idmap(self) -> str:
        """The ``raw.idmap`` value mapping the host user and group onto the container user."""
        return f"uid {self.host_uid} {self.container_uid}\ngid {self.host_gid} {self.container_uid}"

    def delegation_hint(self) -> str:
        """How to let Incus use this mapping."""
        return (f"let Incus map your ids: add 'root:{self.host_uid}:1' to /etc/subuid and "
                f"'root:{self.host_gid}:1' to /etc/subgid, then restart Incus")
