"""The executor's pure rules: egress policy and attempt-result classification."""
