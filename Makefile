# Shortcuts; every target goes through scripts/dev.py, the same entry point CI uses.
.PHONY: demo test lint bench ci
demo:
	python3 scripts/dev.py demo
test:
	python3 scripts/dev.py test
lint:
	python3 scripts/dev.py lint
bench:
	python3 scripts/dev.py bench
ci:
	bash .ci/run
