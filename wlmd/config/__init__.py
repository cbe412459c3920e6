"""Configuration: wlmd's options, the wlmd.conf file, Settings and logging set-up."""
