"""What Herd tells a monitoring system: Prometheus metrics computed from the ledger and the broker."""
