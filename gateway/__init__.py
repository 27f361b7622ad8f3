"""The edge: what Envoy needs that is not Envoy config."""
