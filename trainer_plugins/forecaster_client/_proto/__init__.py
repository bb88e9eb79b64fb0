"""Generated from proto/forecaster/v1 by proto/generate.py. Do not edit."""
