"""How a workspace mount keeps host ownership: an idmapped mount, or a ``raw.idmap`` entry.

Files the container user writes must belong to the invoking host user. An
idmapped mount (``shift=true``) shows host uid N as container uid N, which is
right when the host user's uid equals the container user's (``claude_uid``,
1000 on most desktops). Otherwise, or when the kernel lacks idmapped mounts,
the container gets ``raw.idmap`` mapping the host user onto the container
user; Incus allows that only for ids delegated to root in /etc/subuid and
/etc/subgid (``root:<uid>:1``).
"""

from __future__ import annotations

from typing import NamedTuple


class UserMap(NamedTuple):
    """The invoking host user and the container user their files should belong to."""

    host_uid: int
    host_gid: int
    container_uid: int

    def needs_raw_idmap(self, idmapped_mounts: bool) -> bool:
        """Whether shifted mounts must use ``raw.idmap`` instead of an idmapped mount.

        Never for host root: mapping uid 0 into a container would hand it root's files.
        """
        if self.host_uid == 0:
            return False
        return not idmapped_mounts or self.host_uid != self.container_uid

    def raw_idmap(self) -> str:
        """The ``raw.idmap`` value mapping the host user and group onto the container user."""
        return f"uid {self.host_uid} {self.container_uid}\ngid {self.host_gid} {self.container_uid}"

    def delegation_hint(self) -> str:
        """How to let Incus use this mapping."""
        return (f"let Incus map your ids: add 'root:{self.host_uid}:1' to /etc/subuid and "
                f"'root:{self.host_gid}:1' to /etc/subgid, then restart Incus")
