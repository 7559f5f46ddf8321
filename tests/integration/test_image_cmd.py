"""``cci image`` against the real Incus: list, publish, exists, delete and cleanup on throwaway images.

Every image made here has an alias carrying this test's random tag (or its
fingerprint is recorded), and is deleted afterwards; so are the containers.
``cci-test-base`` is only read. The alias ``cci`` is created (pointing at a test
image) only when it does not exist on this machine, and removed afterwards.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from uuid import uuid4

import pytest
from pylxd.exceptions import NotFound

from cci_core.config import Config
from cci_core.driver import ContainerSpec, ImageInfo
from cci_core.errors import CciError
from cci_builtin_plugins.incus.driver import IncusDriver
from tests import incus_env
from tests.integration.conftest import run_cci

if TYPE_CHECKING:
    import pylxd

pytestmark = pytest.mark.incus

FIELDS = {"fingerprint", "aliases", "description", "created", "size", "tools"}
Cci = Callable[..., subprocess.CompletedProcess[str]]


class ImageMaker:
    """Makes containers and images for one test, all named after a random tag, and deletes them afterwards.

    Only what it made is deleted: containers by the names it gave, images by an
    alias carrying the tag or a recorded fingerprint. The conftest ``driver``
    fixture is not used: at teardown it deletes every container that appeared in
    the project during its test, including other runs' containers; so when a run
    using it overlaps this one, it can delete our containers mid-publish.
    """

    def __init__(self, driver: IncusDriver, client: pylxd.Client) -> None:
        self.driver = driver
        #: an independent client (pylxd): it checks what cci did, and does what cci does not (publish
        #: uncompressed, add an alias)
        self.client = client
        self.tag = uuid4().hex[:6]
        self.prefix = f"cci-t{self.tag}"  # a cci image alias prefix
        self.fingerprints: set[str] = set()
        self.containers: list[str] = []
        self.made_cci_alias = False

    def container(self) -> str:
        """A new, never-started container from the test image."""
        name = f"imgt{self.tag}-{len(self.containers)}"
        self.containers.append(name)
        self.driver.create(ContainerSpec(name, incus_env.IMAGE))
        return name

    def publish(self, alias: str) -> ImageInfo:
        """A new image under ``alias``, published from a fresh container, which is then deleted.

        The request is the driver's, without compression (about 2 s instead of
        14 s with the server's gzip); ``cci image publish`` itself is tested through
        the driver. The description makes each image's content, so its fingerprint, unique.
        """
        client = self.client
        container = self.container()
        body = {"source": {"type": "instance", "name": container}, "compression_algorithm": "none",
                "properties": {"description": f"test image {alias}"}, "aliases": [{"name": alias}]}
        response = client.api.images.post(json=body)
        fingerprint = str(client.operations.wait_for_operation(response.json()["operation"]).metadata["fingerprint"])
        self.fingerprints.add(fingerprint)
        self.discard(container)  # the shorter it lives, the less it disturbs overlapping runs (see above)
        published = self.image(fingerprint)
        assert published is not None
        return published

    def image(self, fingerprint: str) -> ImageInfo | None:
        """The image with this fingerprint, as Incus describes it now (read through pylxd)."""
        try:
            found = self.client.api.images[fingerprint].get().json()["metadata"]
        except NotFound:
            return None
        properties = dict(found.get("properties") or {})
        return ImageInfo(found["fingerprint"], tuple(alias["name"] for alias in found.get("aliases") or ()),
                         properties.get("description", ""), found.get("created_at", ""), int(found["size"]),
                         properties)

    def alias_exists(self, alias: str) -> bool:
        """Whether Incus has the image alias ``alias`` (read through pylxd)."""
        return bool(self.client.images.exists(alias, alias=True))

    def add_alias(self, alias: str, fingerprint: str) -> None:
        """Create a new alias (never moves an existing one: Incus refuses a duplicate name)."""
        self.client.api.images.aliases.post(json={"name": alias, "target": fingerprint})

    def point_cci_at(self, fingerprint: str) -> bool:
        """Create the alias ``cci`` for this image if no ``cci`` exists on this machine; whether it did."""
        if self.driver.image_exists("cci"):
            return False
        self.add_alias("cci", fingerprint)
        self.made_cci_alias = True
        return True

    def cleanup(self) -> None:
        """Delete our ``cci`` alias, our images and our containers."""
        try:
            if self.made_cci_alias and self.driver.image_exists("cci"):
                target = self.client.api.images.aliases["cci"].get().json()["metadata"]["target"]
                if target in self.fingerprints:
                    self.client.api.images.aliases["cci"].delete()
        finally:
            for found in self.driver.list_images():
                if found.fingerprint in self.fingerprints or any(self.tag in alias for alias in found.aliases):
                    self.driver.delete_image(found.fingerprint)
            for name in self.containers:
                self.discard(name)

    def discard(self, name: str) -> None:
        """Delete our container ``name`` if it still exists."""
        try:
            container = self.driver.get(name)
            if container.status() != "stopped":
                container.stop(force=True)
            container.delete()
        except CciError:
            if not self.vanished(name):  # not deleted by another run meanwhile: a real failure
                raise

    def vanished(self, container: str, timeout: float = 15) -> bool:
        """Whether ``container`` is deleted (by someone else) within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.driver.exists(container):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True


@pytest.fixture
def images(config: Config, incus: pylxd.Client) -> Iterator[ImageMaker]:
    made = ImageMaker(IncusDriver(config), incus)
    try:
        yield made
    finally:
        made.cleanup()
    assert not any(made.tag in alias["name"] for found in incus.images.all() for alias in found.aliases)
    if made.made_cci_alias:
        assert not made.alias_exists("cci")


@pytest.fixture
def cci(cci_environ: dict[str, str]) -> Cci:
    """Run ``cci`` in the test project; a traceback in its output always fails the test."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = run_cci(*args, env=cci_environ)
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result

    return run


def fails(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """Exit ``code`` with one ``cci: ...`` line on stderr containing every fragment."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cci: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_list_shows_an_images_aliases_sorted(images: ImageMaker, cci: Cci) -> None:
    """Incus promises no order for an image's aliases (it varies between machines): cci sorts them."""
    made = images.publish(f"{images.prefix}-z")
    for alias in (f"{images.prefix}-a", f"{images.prefix}-m"):
        images.add_alias(alias, made.fingerprint)
    expected = [f"{images.prefix}-{name}" for name in "amz"]

    table = cci("image", "list", "--prefix", images.prefix)
    assert table.returncode == 0, table.stderr
    assert [re.split(r"\s{2,}", row)[0] for row in table.stdout.splitlines()[1:]] == [", ".join(expected)]
    listed = json.loads(cci("image", "list", "--prefix", images.prefix, "--format", "json").stdout)
    assert [entry["aliases"] for entry in listed] == [expected]


def test_list_filters_and_formats(images: ImageMaker, cci: Cci) -> None:
    ours = images.publish(f"{images.prefix}-a")
    other = images.publish(f"t{images.tag}-b")  # not a cci image

    table = cci("image", "list")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ALIASES", "FINGERPRINT", "DESCRIPTION", "TOOL", "CREATED", "SIZE"]
    row = next(line for line in rows if line.startswith(f"{images.prefix}-a "))
    cells = re.split(r"\s{2,}", row)
    assert cells[1] == ours.fingerprint[:12] and ours.fingerprint not in table.stdout
    assert cells[2] == f"test image {images.prefix}-a"
    assert cells[3] == "-"  # no tool recorded in the test base
    assert cells[4] == ours.created[:19].replace("T", " ")
    assert cells[5] == f"{ours.size / 1024**2:.1f} MiB"
    # cci-test-base is a cci image (cci build base gives it a versioned alias too)
    # (in either order: Incus does not promise one for an image's aliases)
    assert any(incus_env.IMAGE in re.split(r"\s{2,}", line)[0].split(", ") for line in rows)
    assert other.aliases[0] not in table.stdout

    everything = cci("image", "list", "--all")
    assert f"{images.prefix}-a" in everything.stdout and other.aliases[0] in everything.stdout

    by_prefix = cci("image", "list", "--prefix", f"t{images.tag}-")
    assert by_prefix.returncode == 0
    assert [line.split()[0] for line in by_prefix.stdout.splitlines()[1:]] == [other.aliases[0]]
    assert cci("image", "list", "--all", "--prefix", f"t{images.tag}-").stdout == by_prefix.stdout
    assert [line.split()[0] for line in cci("image", "list", "--prefix", images.prefix).stdout.splitlines()[1:]] \
        == [f"{images.prefix}-a"]
    nothing = cci("image", "list", "--prefix", f"none{images.tag}")
    assert nothing.returncode == 0
    assert nothing.stdout == f"no image has an alias starting with 'none{images.tag}'\n"

    listed = json.loads(cci("image", "list", "--format", "json").stdout)
    assert all(set(entry) == FIELDS for entry in listed)
    assert all(any(a == "cci" or a.startswith("cci-") for a in entry["aliases"]) for entry in listed)
    assert {"fingerprint": ours.fingerprint, "aliases": [f"{images.prefix}-a"],
            "description": f"test image {images.prefix}-a", "created": ours.created, "size": ours.size, "tools": {}} in listed
    assert isinstance(ours.size, int) and ours.size > 1024**2
    assert other.fingerprint not in {entry["fingerprint"] for entry in listed}
    listed_all = json.loads(cci("image", "list", "--all", "--format", "json").stdout)
    assert next(e for e in listed_all if e["fingerprint"] == other.fingerprint)["aliases"] == [f"t{images.tag}-b"]

    fails(cci("image", "list", "--prefix", ""), 2, "--prefix must not be empty")


def test_publish_moves_the_alias_then_delete_and_exists(images: ImageMaker, cci: Cci) -> None:
    alias = f"{images.prefix}-p"
    missing = cci("image", "exists", alias)
    assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", "")

    container = images.container()
    first = cci("image", "publish", container, alias, "--description", f"first {images.tag}")
    assert first.returncode == 0, first.stderr
    first_fp = re.fullmatch(rf"published {container} as {alias}: ([0-9a-f]{{64}})\n", first.stdout).group(1)
    images.fingerprints.add(first_fp)
    published = images.image(first_fp)
    assert published is not None
    assert (published.aliases, published.description) == ((alias,), f"first {images.tag}")
    present = cci("image", "exists", alias)
    assert (present.returncode, present.stdout, present.stderr) == (0, "", "")

    second = cci("image", "publish", container, alias)
    assert second.returncode == 0, second.stderr
    second_fp = re.match(rf"published {container} as {alias}: ([0-9a-f]{{64}})\n", second.stdout).group(1)
    images.fingerprints.add(second_fp)
    assert second_fp != first_fp
    assert f"moved from image {first_fp[:12]}, which is kept" in second.stdout
    assert images.image(second_fp).aliases == (alias,)
    assert images.image(first_fp).aliases == ()  # the old image stays, without the alias

    deleted = cci("image", "delete", first_fp[:12])
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == f"deleted image {first_fp[:12]}\n"
    assert images.image(first_fp) is None and images.image(second_fp) is not None

    assert cci("image", "delete", alias).returncode == 0
    assert images.image(second_fp) is None
    assert cci("image", "exists", alias).returncode == 1
    fails(cci("image", "delete", alias), 5, f"no image alias {alias!r}")


def test_publish_and_delete_refuse_clearly(images: ImageMaker, cci: Cci) -> None:
    fails(cci("image", "publish", f"imgt{images.tag}-nosuch", f"{images.prefix}-x"), 5, "no container named")

    running = images.container()
    images.driver.get(running).start()
    fails(cci("image", "publish", running, f"{images.prefix}-r"), 2,
          f"container {running} is running", f"cci container stop {running}")
    assert not images.alias_exists(f"{images.prefix}-r")

    fails(cci("image", "delete", f"{images.prefix}-missing"), 5, "no image alias")
    fails(cci("image", "delete", incus_env.IMAGE[:3] + "abc"), 5, "at least 12 characters")
    fails(cci("image", "delete", "0" * 12), 5, "matches no image")
    # '?#%/' are part of the name (the driver quotes it into the URL): no such image, not cci-test-base
    for suffix in ("?x", "#x", "%3F", "/x", "/../cci-test-base"):
        missing = cci("image", "exists", f"{incus_env.IMAGE}{suffix}")
        assert (missing.returncode, missing.stdout, missing.stderr) == (1, "", ""), suffix
    fails(cci("image", "publish", running, "bad alias"), 2, "invalid image alias 'bad alias'", "' '")
    fails(cci("image", "exists", "new\nline"), 2, "invalid image alias", "'\\n'")
    for bad in ("with space", "x" * 64):
        fails(cci("image", "publish", bad, f"{images.prefix}-b"), 2, f"invalid container name {bad!r}",
              "1 to 63 letters, digits and hyphens")
    assert not images.alias_exists(f"{images.prefix}-b")
    assert images.alias_exists(incus_env.IMAGE)


def test_an_alias_with_url_characters_is_one_name(images: ImageMaker, cci: Cci) -> None:
    made = images.publish(f"{images.prefix}-u")
    odd = f"{images.prefix}?#%2F/../{incus_env.IMAGE}"
    images.add_alias(odd, made.fingerprint)
    found = cci("image", "exists", odd)
    assert (found.returncode, found.stdout, found.stderr) == (0, "", "")
    listed = json.loads(cci("image", "list", "--prefix", images.prefix, "--format", "json").stdout)
    assert [entry["aliases"] for entry in listed] == [sorted([f"{images.prefix}-u", odd])]
    deleted = cci("image", "delete", odd)
    assert (deleted.returncode, deleted.stdout) == (0, f"deleted image {odd}\n"), deleted.stderr
    assert images.image(made.fingerprint) is None and images.alias_exists(incus_env.IMAGE)


def test_cleanup_keeps_the_newest_and_protected_images(images: ImageMaker, cci: Cci) -> None:
    versions = f"{images.prefix}-v"
    v1, v2, v3 = (images.publish(f"{versions}{n}") for n in (1, 2, 3))
    assert v1.created < v2.created < v3.created  # published in this order, nanosecond timestamps

    dry = cci("image", "cleanup", versions, "--keep", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [line.split(" (")[0] for line in dry.stdout.splitlines()[:3]] == [
        f"keep {versions}3", f"would delete {versions}2", f"would delete {versions}1",
    ]
    assert "the newest" in dry.stdout
    assert dry.stdout.endswith("would delete 2 images, keep 1 (dry run: nothing was deleted)\n")
    assert all(images.image(image.fingerprint) for image in (v1, v2, v3))

    pinned = images.point_cci_at(v1.fingerprint)  # False when this machine has a real 'cci' image
    real = cci("image", "cleanup", versions, "--keep", "1")
    assert real.returncode == 0, real.stderr
    assert f"deleted {versions}2 ({v2.fingerprint[:12]}, created " in real.stdout
    assert images.image(v2.fingerprint) is None
    assert images.image(v3.fingerprint) is not None
    if pinned:
        kept_v1 = next(line for line in real.stdout.splitlines() if v1.fingerprint[:12] in line)
        assert kept_v1.startswith("keep ") and kept_v1.endswith(": the alias 'cci' points to it")
        assert images.image(v1.fingerprint) is not None
        assert real.stdout.endswith("deleted 1 image, kept 2\n")
    else:
        assert images.image(v1.fingerprint) is None

    images.add_alias(f"t{images.tag}-in-use", v3.fingerprint)
    none_left = cci("image", "cleanup", versions, "--keep", "0")
    assert none_left.returncode == 0, none_left.stderr
    assert f"also aliased t{images.tag}-in-use" in none_left.stdout
    assert none_left.stdout.endswith(f"deleted 0 images, kept {2 if pinned else 1}\n")
    assert images.image(v3.fingerprint) is not None
    assert (images.image(v1.fingerprint) is not None) is pinned

    fails(cci("image", "cleanup", "", "--keep", "1"), 2, "prefix must not be empty")
    for bad in (["--keep", "-1"], []):
        result = cci("image", "cleanup", versions, *bad)
        assert result.returncode == 2 and "--keep" in result.stderr
    assert images.image(v3.fingerprint) is not None
