"""The Incus group before the next login: cci runs itself again under ``sg`` when the login lacks the group.

``cci setup`` adds the user to ``[incus] group`` (``incus-admin``), but processes of
the login that ran it keep the groups they started with. When the socket refuses
such a process and the group database lists the user in the group, cci starts
itself again, once, with the group added (``sg GROUP`` from Debian's ``login``
package); an environment marker keeps it from doing so twice.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

#: set in the environment of the cci that runs under sg (its value: the group), so it never runs sg again
MARKER = "CCI_SG_GROUP"


def listed_in_group(group: str, uid: int) -> bool:
    """Whether the group database lists this user in ``group`` (a membership this process may not have yet)."""
    import grp
    import pwd

    try:
        entry = grp.getgrnam(group)
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return user.pw_name in entry.gr_mem or user.pw_gid == entry.gr_gid


def lacks_group(group: str) -> bool:
    """Whether the user is listed in ``group`` but this process does not have it (it started before)."""
    import grp

    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    return gid not in {*os.getgroups(), os.getegid()} and listed_in_group(group, os.getuid())


def sg_command(group: str, primary: str, command: list[str]) -> list[str]:
    """``command`` under ``sg``: first ``group`` is added, then ``primary`` is the process's group again.

    ``sg GROUP`` makes GROUP the process's group (files cci writes, and the gid cci maps
    into the container, would be GROUP's); the inner ``sg PRIMARY`` puts the user's own
    group back and keeps GROUP as a supplementary one, as a new login would have it.
    """
    inner = f"exec sg {shlex.quote(primary)} -c {shlex.quote(shlex.join(command))}"
    return ["sg", group, "-c", inner]


def rerun_under_group(group: str) -> None:
    """Replace this cci by the same command under ``sg`` when that gives it ``group``; return when it cannot.

    Only the ``cci`` command line does it (never a library caller), never as root or
    twice, only for a user the group database lists in ``group`` whose process lacks it,
    and only with ``sg`` installed. stdin, the terminal and the exit code pass through.
    """
    import grp
    import pwd

    from cci_core.api import own_command, started_here

    if not started_here() or os.geteuid() == 0 or os.environ.get(MARKER) or not lacks_group(group):
        return
    if shutil.which("sg") is None:
        return
    try:
        own_group = pwd.getpwuid(os.getuid()).pw_gid
        primary = grp.getgrgid(own_group).gr_name
    except KeyError:
        return
    if os.getgid() != own_group:  # started under another group already: sg back to it could ask for a password
        return
    sys.stderr.write(f"cci: this login started before you joined {group}: running cci under 'sg {group}' "
                     "(log in again to have the group everywhere)\n")
    sys.stdout.flush()
    sys.stderr.flush()
    argv = sg_command(group, primary, [*own_command(), *sys.argv[1:]])
    try:
        os.execvpe(argv[0], argv, {**os.environ, MARKER: group})
    except OSError:  # sg went away meanwhile: the caller reports the refused socket
        return
