"""Fuzzing wlmd over real loopback sockets: generators, a raw client and a campaign runner."""
