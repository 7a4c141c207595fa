"""Shared pytest configuration: each stand-in registers its fixtures as a plugin."""

pytest_plugins = [
    "tests.standins.comfyui_plugin",
    "tests.standins.s3_plugin",
    "tests.standins.kube_plugin",
    "tests.standins.discord_plugin",
]
