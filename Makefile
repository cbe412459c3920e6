# wlmd — developer and install targets. `make run` and `make test` need nothing but python3.

PYTHON  ?= python3
VENV    ?= .venv
PORT    ?= 11112
LISTEN  ?= 127.0.0.1
PREFIX  ?= /usr/local
DESTDIR ?=

BIN       := $(VENV)/bin
RUN_STAMP := $(VENV)/.runtime
STAMP     := $(VENV)/.installed
MANDIR    := $(PREFIX)/share/man
UNITDIR   ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc

.PHONY: run test check lint fuzz soak bench bench-mpps examples install deb test-deb clean

# `make run` needs the runtime dependencies only; the test tools come with `make test`.
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## Serve the bundled example worklists on $(LISTEN):$(PORT) in the foreground (Ctrl-C stops).
## The first line says where it listens; then one line per association.
run: $(RUN_STAMP)
	$(BIN)/wlmd --listen-address $(LISTEN) -dfp examples/worklists $(PORT)

## The test suite (interop tests need DCMTK: apt-get install -y dcmtk).
test: lint
	$(BIN)/python -m pytest -q -x --durations=15

## The unit tier only (tests/unit, marked by tests/conftest.py): about 20 s, for every edit.
check: $(STAMP)
	$(BIN)/python -m pytest -q -m unit

## Fuzz a running wlmd in both modes for FUZZ_SECONDS (default 300); FUZZ_SEED to replay a run.
## Prints cases, crashes and coverage; reproducers of findings go to tests/fuzz/regressions/.
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	-$(BIN)/python -m pip install --quiet coverage
	$(BIN)/python -m tests.fuzz.runner --seconds $(FUZZ_SECONDS) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

## Benchmarks against DCMTK's wlmscpfs (issue #5): SCENARIOS="small medium large", QUICK=1;
## then MPPS (bench-mpps, issue #12); then HL7 intake (issue #14): orders/s with ACK after
## fsync, and order-to-C-FIND delay; then the HTTP API.
## BENCH_POLICY=1: wlmd with benchmarks/policy.toml against wlmd without it (issue #17).
## wlmd as benchmarked: a warm pool for 8 concurrent clients (the runner adds --index-file).
BENCH_ARGS ?= --rounds 2 --wlmd-arg=--min-spare-workers --wlmd-arg=8
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(if $(SCENARIOS),--scenario $(SCENARIOS)) $(if $(QUICK),--quick) \
		$(if $(BENCH_POLICY),--policy) $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-mpps
	$(BIN)/python -m benchmarks.hl7 $(if $(QUICK),--quick)
	$(BIN)/python -m benchmarks.http $(if $(QUICK),--quick)

## MPPS (issue #12): N-CREATE + N-SET COMPLETED pairs/s, 8 concurrent, with fsync and the
## worklist update (target >= 200/s); then the small and medium C-FIND rows of wlmd with --mpps
## against wlmd without it in the same run (target: unchanged, within 10 %).
bench-mpps: $(STAMP)
	$(BIN)/python -m benchmarks.mpps $(if $(QUICK),--quick)
	$(BIN)/python -m benchmarks.run --mpps --scenario small medium --no-orthanc \
		$(if $(QUICK),--quick) $(BENCH_ARGS)

## Long chaos run (issue #6): ARGS="--attempts 2000 --concurrency 200 --kills 10 --stops 5".
## Then the writer crash run (issue #11): wlmctl killed at every step WRITER_ROUNDS times while
## wlmd and wlmscpfs answer queries on the same directory (needs DCMTK).
WRITER_ROUNDS ?= 20
soak: $(STAMP)
	$(BIN)/python -m tests.chaos.soak $(ARGS)
	rm -rf .soak-writer && $(BIN)/python -m tests.support.writer_crash --rounds $(WRITER_ROUNDS) \
		--workdir .soak-writer && rm -rf .soak-writer

## ruff over the tree; mypy over wlmd/ (strict for wlmd/dicom and wlmd/daemon: pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check wlmd tests benchmarks examples
	$(BIN)/mypy

## Regenerate examples/worklists and examples/queries (deterministic).
examples: $(STAMP)
	$(BIN)/python examples/make_worklists.py

## Install for real: wlmd in its own environment, PREFIX/lib/wlmd (built with $(PYTHON), a
## system or a venv python; never pip into the system python), wlmd, wlmctl, wlmd-findscu linked
## into PREFIX/bin (never `findscu`: DCMTK's stays first), man pages, units whose ExecStart is
## PREFIX/bin/wlmd, sysusers/tmpfiles snippets, and the config file if there is none yet.
## DESTDIR stages the tree for packagers.
# Debian's python unless PYTHON is given: the service cannot run an interpreter in /root or /home.
INSTALL_PYTHON := $(if $(filter command line environment,$(origin PYTHON)),$(PYTHON),$(firstword \
	$(wildcard /usr/bin/python3) $(PYTHON)))

install:
	packaging/install-venv.sh "$(INSTALL_PYTHON)" "$(PREFIX)" "$(DESTDIR)"
	install -Dm644 man/wlmd.8 $(DESTDIR)$(MANDIR)/man8/wlmd.8
	install -Dm644 man/wlmd.conf.5 $(DESTDIR)$(MANDIR)/man5/wlmd.conf.5
	install -Dm644 man/wlmd-findscu.1 $(DESTDIR)$(MANDIR)/man1/wlmd-findscu.1
	install -Dm644 systemd/wlmd.service $(DESTDIR)$(UNITDIR)/wlmd.service
	sed -i 's#^ExecStart=/usr/bin/wlmd#ExecStart=$(PREFIX)/bin/wlmd#' $(DESTDIR)$(UNITDIR)/wlmd.service
	install -Dm644 systemd/wlmd.socket $(DESTDIR)$(UNITDIR)/wlmd.socket
	install -Dm644 man/wlmctl.8 $(DESTDIR)$(MANDIR)/man8/wlmctl.8
	install -Dm644 systemd/wlmd-expire.service $(DESTDIR)$(UNITDIR)/wlmd-expire.service
	sed -i 's#^ExecStart=/usr/bin/wlmctl#ExecStart=$(PREFIX)/bin/wlmctl#' \
		$(DESTDIR)$(UNITDIR)/wlmd-expire.service
	install -Dm644 systemd/wlmd-expire.timer $(DESTDIR)$(UNITDIR)/wlmd-expire.timer
	install -Dm644 systemd/wlmd.sysusers.conf $(DESTDIR)$(PREFIX)/lib/sysusers.d/wlmd.conf
	install -Dm644 systemd/wlmd.tmpfiles.conf $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/wlmd.conf
	install -Dm644 etc/wlmd.conf $(DESTDIR)$(SYSCONFDIR)/wlmd/wlmd.conf.example
	test -e $(DESTDIR)$(SYSCONFDIR)/wlmd/wlmd.conf || \
		install -Dm644 etc/wlmd.conf $(DESTDIR)$(SYSCONFDIR)/wlmd/wlmd.conf
	install -Dm644 etc/logging.conf $(DESTDIR)$(SYSCONFDIR)/wlmd/logging.conf.example
	install -Dm644 etc/hosts.allow.example $(DESTDIR)$(SYSCONFDIR)/wlmd/hosts.allow.example
	install -Dm644 etc/hosts.deny.example $(DESTDIR)$(SYSCONFDIR)/wlmd/hosts.deny.example

## The Debian package wlmd_<version>_<arch>.deb, here (needs: apt-get install debhelper
## python3-venv; the wheels come from the package index at build time).
deb:
	dpkg-checkbuilddeps
	debian/rules clean
	debian/rules build
	debian/rules binary DEB_DESTDIR=$(CURDIR)
	debian/rules clean

## Install the package on this machine, check it, purge it (root; what CI runs).
test-deb: deb
	packaging/test-deb.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache wlmd_*.deb
