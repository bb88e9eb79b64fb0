"""The gRPC transport: servicer, conversions, interceptors, health and reflection."""
