"""``python -m wlmd.config > etc/wlmd.conf``: print the shipped configuration file."""

from wlmd.config.file import render_config

print(render_config(), end="")
