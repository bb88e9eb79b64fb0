.PHONY: install dev test test-fast typecheck lint proto serve demo bench

install:            ## the service and its runtime dependencies
	pip install -e .

dev:                ## plus tests, linters, code generation and the trainer plugins
	pip install -e ".[dev]" -e "./trainer_plugins[all]"

test:               ## the README's test command (after `make dev`): type-check, then every test
	mypy && python -m pytest

test-fast:          ## the tests not marked slow: under a minute, for the edit-test loop
	python -m pytest -m "not slow" -q

typecheck:          ## mypy over both distributions (settings: [tool.mypy] in pyproject.toml)
	mypy

lint:
	ruff check . && ruff format --check .

proto:              ## regenerate the service's and the client's _proto from proto/ (commit the result)
	python proto/generate.py

serve:
	forecaster serve

demo:
	forecaster demo

bench:              ## writes docs/benchmarks.md
	python benchmarks/service_load.py
	python benchmarks/forecast_accuracy.py
	python benchmarks/replay.py
	python benchmarks/replay_freeze.py
	python benchmarks/plugin_overhead.py
	python benchmarks/batch.py --replay-tasks 7
