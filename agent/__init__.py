"""The consult-then-reason agent loop, the rule tool adapters and episode traces."""
