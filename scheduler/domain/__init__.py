"""The scheduler's pure policies: timer identity and when to wake."""
