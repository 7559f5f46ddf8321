"""cci's built-in plugins, installed as the import package ``cci_builtin_plugins``.

The folder is ``plugins/`` in the source tree; see ``docs/plugins.md`` for why
the import name differs. Each plugin is listed in
``cci_core.plugin_manager.BUILTIN_PLUGINS``.
"""
