"""The executor: waits for a call's not-before time, sends its HTTP request, reports the result."""
