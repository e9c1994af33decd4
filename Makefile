# DnD Studio. `make run` serves the app on its embedded default; `make test` runs every test.
# Both do all set-up on a fresh Debian 12 machine (see scripts/setup.sh); later runs are incremental.
.PHONY: run test setup build e2e

run:
	scripts/run.sh

test:
	scripts/test.sh

setup:
	scripts/setup.sh

build: setup
	scripts/build.sh

e2e: build
	scripts/e2e.sh
