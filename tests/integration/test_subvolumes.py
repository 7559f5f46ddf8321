"""No btrfs subvolume is made inside a session: on a btrfs pool a new subvolume has a quota group of its own, outside
the root disk's ``size`` ([limits] disk), so one made by the agent (root or not) took its writes past that limit until
the pool was full (4 GiB written into one under disk = 4GiB, where 4 GiB in /tmp was refused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cci_builtin_plugins.incus.driver import IncusDriver
from tests.integration.conftest import run_cci

pytestmark = pytest.mark.incus

#: BTRFS_IOC_SUBVOL_CREATE; the same with bits above its 32 set (the kernel ignores them, a filter comparing 64 bits
#: would not); BTRFS_IOC_SNAP_CREATE_V2 and BTRFS_IOC_SNAP_CREATE of SOURCE (a directory: Incus's root is none)
SUBVOLUME = r"""
use strict;
my ($case, $into, $source) = @ARGV;
open(my $dir, "<", $into) or die "$into: $!";
open(my $from, "<", $source || $into) or die "$source: $!";
my %ioctl = (subvolume => [0x5000940e, pack("q a4088", 0, "made-$case")],
             high => [0xffffffff5000940e, pack("q a4088", 0, "made-$case")],
             snapshot => [0x50009417, pack("q Q Q Q4 a4040", fileno($from), 0, 0, 0, 0, 0, 0, "made-$case")],
             snapshot1 => [0x50009401, pack("q a4088", fileno($from), "made-$case")]);
my ($number, $arguments) = @{$ioctl{$case}};
print($> == 0 ? "root-" : "", "$case=", (ioctl($dir, $number, $arguments) ? "made" : "refused ($!)"), "\n");
"""


def test_the_agent_makes_no_btrfs_subvolume_as_the_user_nor_as_root(
    driver: IncusDriver, tmp_path: Path, cci_environ: dict[str, str],
) -> None:
    (tmp_path / "subvolume.pl").write_text(SUBVOLUME)
    tmp_path.chmod(0o755)  # the container user reads the script as well
    script = ("perl /workspace/subvolume.pl subvolume /tmp; perl /workspace/subvolume.pl high /tmp; "
              "sudo perl /workspace/subvolume.pl subvolume /; perl /workspace/subvolume.pl snapshot /tmp /tmp; "
              "sudo perl /workspace/subvolume.pl snapshot1 / /; echo made=$(ls -d /tmp/made-* /made-* 2>/dev/null)")
    result = run_cci("--workspace", str(tmp_path), "run", "--", "sh", "-c", script, env=cci_environ)
    assert result.returncode == 0, result.stderr
    seen = dict(line.split("=", 1) for line in result.stdout.splitlines())
    refused = "refused (Operation not permitted)"
    assert seen == {"subvolume": refused, "high": refused, "root-subvolume": refused, "snapshot": refused,
                    "root-snapshot1": refused, "made": ""}, (result.stdout, result.stderr)
