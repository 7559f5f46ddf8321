"""The lifecycle hook contract: each hook takes the documented keyword arguments and returns what it says."""

from __future__ import annotations

from pathlib import Path

from cci_core import hookimpl
from cci_core.config import load_config
from cci_core.context import LaunchContext, Mount, SessionEvent
from cci_core.plugin_manager import load_plugins
from tests.fakes import FakeContainer, FakeDriver


class Recorder:
    """Implements every lifecycle hook and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    @hookimpl
    def cci_register(self, register):
        register.add_driver(FakeDriver)

    @hookimpl
    def cci_pre_launch(self, ctx):
        ctx.environment["SET_BY_PRE_LAUNCH"] = "1"
        self.calls.append(("cci_pre_launch", ctx.container_name))

    @hookimpl
    def cci_instance_config(self, ctx):
        return {"security.nesting": "true"}

    @hookimpl
    def cci_mounts(self, ctx):
        return [Mount("storage", ctx.workspace, "/storage")]

    @hookimpl
    def cci_environment(self, ctx):
        return {"SETTING": str(ctx.plugin_settings("recorder").get("value"))}

    @hookimpl
    def cci_pre_start(self, ctx, container, restart):
        self.calls.append(("cci_pre_start", restart))

    @hookimpl
    def cci_inject_credentials(self, ctx, container):
        container.push_file("/home/code/.token", b"secret", mode=0o600, uid=1000, gid=1000)

    @hookimpl
    def cci_post_launch(self, container):
        self.calls.append(("cci_post_launch", container.name))

    @hookimpl
    def cci_session_save(self, ctx, container, event):
        self.calls.append(("cci_session_save", event))

    @hookimpl
    def cci_post_exit_save(self, ctx, container):
        self.calls.append(("cci_post_exit_save", container.name))

    @hookimpl
    def cci_session_end(self, ctx, deleted, report):
        report("ended")
        self.calls.append(("cci_session_end", deleted))


def test_every_lifecycle_hook_round_trip(tmp_path: Path) -> None:
    (tmp_path / ".cci.toml").write_text('[plugins.recorder]\nvalue = "42"\n')
    config = load_config(tmp_path, environ={})
    recorder = Recorder()
    plugins = load_plugins(entry_points=False, extra=[("recorder", recorder)])
    hook = plugins.hook
    ctx = LaunchContext(config=config, workspace=tmp_path, container_name="cci-0123abcd-1", slot=1,
                        session_id="sid", persistent=False, image="cci")
    container = FakeContainer(ctx.container_name)

    hook.cci_pre_launch(ctx=ctx)
    assert ctx.environment == {"SET_BY_PRE_LAUNCH": "1"}
    assert hook.cci_instance_config(ctx=ctx) == [{"security.nesting": "true"}]
    assert hook.cci_mounts(ctx=ctx) == [[Mount("storage", tmp_path, "/storage")]]
    assert hook.cci_environment(ctx=ctx) == [{"SETTING": "42"}]
    hook.cci_pre_start(ctx=ctx, container=container, restart=False)
    hook.cci_inject_credentials(ctx=ctx, container=container)
    assert container.files == {"/home/code/.token": (b"secret", 0o600, 1000, 1000)}
    hook.cci_post_launch(ctx=ctx, container=container)
    hook.cci_session_save(ctx=ctx, container=container, event=SessionEvent.DETACH)
    hook.cci_post_exit_save(ctx=ctx, container=container)
    reported: list[str] = []
    hook.cci_session_end(ctx=ctx, deleted=True, report=reported.append)
    assert reported == ["ended"]
    assert recorder.calls == [
        ("cci_pre_launch", "cci-0123abcd-1"),
        ("cci_pre_start", False),
        ("cci_post_launch", "cci-0123abcd-1"),
        ("cci_session_save", SessionEvent.DETACH),
        ("cci_post_exit_save", "cci-0123abcd-1"),
        ("cci_session_end", True),
    ]
    driver = plugins.registries.drivers.get("fake")(config)
    assert driver.server_info().server == "fake"
