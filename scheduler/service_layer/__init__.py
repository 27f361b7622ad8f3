"""The scheduler's use cases on domain values, behind ports: firing, arming, the timer API."""
