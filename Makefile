.PHONY: install dev test lint proto serve demo bench

install:            ## the service and its runtime dependencies
	pip install -e .

dev:                ## plus tests, linters, code generation and the trainer plugins
	pip install -e ".[dev]" -e "./trainer_plugins[all]"

test:               ## the README's test command
	python -m pytest

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
	python benchmarks/plugin_overhead.py
