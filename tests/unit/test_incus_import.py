"""An image import interrupted while Incus processes the tarball leaves no new image (the Incus driver, API stubbed)."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from cci_builtin_plugins.incus.driver import IncusDriver
from cci_builtin_plugins.incus.rest import Response
from cci_core.config import load_config


class StubAPI:
    """Incus's image endpoints: the POST starts an operation, which makes the image when it is waited on."""

    def __init__(self, fingerprint: str, images: set[str], interrupt_in_cleanup: bool = False,
                 interrupt: bool = True) -> None:
        self.fingerprint = fingerprint
        self.interrupt = interrupt
        self.images = images
        self.waits = 0
        self.deleted: list[str] = []
        self.interrupt_in_cleanup = interrupt_in_cleanup

    def get(self, path: str, action: str, **params: Any) -> Any:
        if path == "/1.0/images":
            return [{"fingerprint": fingerprint, "aliases": [], "properties": {}} for fingerprint in self.images]
        return {"fingerprint": path.rsplit("/", 1)[1], "aliases": [], "properties": {}}

    def request(self, method: str, path: str, action: str, **kwargs: Any) -> Response:
        assert (method, path) == ("POST", "/1.0/images")
        return Response(202, {}, b'{"type": "async", "operation": "/1.0/operations/op1", "metadata": {}}')

    def wait(self, operation: str, action: str, timeout: float | None = None) -> dict[str, Any]:
        self.waits += 1
        if self.waits == 1 and self.interrupt:  # Ctrl+C while Incus stores the tarball; it goes on without us
            raise KeyboardInterrupt
        assert timeout is not None or not self.interrupt, "the wait after an interrupt is bounded"
        if self.interrupt_in_cleanup:
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl+C: ignored while cleaning up
        self.images.add(self.fingerprint)
        return {"id": "op1", "status": "Success", "metadata": {"fingerprint": self.fingerprint}}

    def call(self, method: str, path: str, action: str, body: Any = None, **kwargs: Any) -> Any:
        assert method == "DELETE"
        fingerprint = path.rsplit("/", 1)[1]
        self.deleted.append(fingerprint)
        self.images.discard(fingerprint)
        return {}


def _import(tmp_path: Path, api: StubAPI) -> str:
    driver = IncusDriver(load_config(tmp_path, environ={}))
    driver.__dict__["api"] = api
    return driver.import_image(tmp_path / "image.tar.zst").fingerprint


@pytest.fixture
def tarball(tmp_path: Path) -> str:
    (tmp_path / "image.tar.zst").write_bytes(b"an image")
    return hashlib.sha256(b"an image").hexdigest()


@pytest.mark.parametrize("second_interrupt", [False, True])
def test_an_interrupted_import_waits_for_incus_and_deletes_the_image_it_made(
        tmp_path: Path, tarball: str, second_interrupt: bool) -> None:
    api = StubAPI(tarball, {"other"}, interrupt_in_cleanup=second_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _import(tmp_path, api)
    assert api.waits == 2 and api.deleted == [tarball] and api.images == {"other"}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back afterwards


def test_an_interrupted_import_never_deletes_an_image_that_was_there_before(tmp_path: Path, tarball: str) -> None:
    api = StubAPI(tarball, {tarball, "other"})
    with pytest.raises(KeyboardInterrupt):
        _import(tmp_path, api)
    assert api.deleted == [] and api.images == {tarball, "other"}


def test_an_import_returns_the_image_incus_made(tmp_path: Path, tarball: str) -> None:
    api = StubAPI(tarball, {"other"}, interrupt=False)
    assert _import(tmp_path, api) == tarball
    assert api.waits == 1 and api.images == {"other", tarball}
